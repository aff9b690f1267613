"""Start and stop the simulator as a subprocess, and talk to its `/_sim` control endpoints.

Stdlib only, so tests and benchmarks can import it without pulling in the server.

    with start_simulator({"users": [...]}) as sim:
        sim.base_url        # http://127.0.0.1:PORT/v1.0
        sim.configure(throttle_enabled=False)
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 90.0  # bounds a failure only: a loaded machine starts slowly


def free_port() -> int:
    """A free loopback TCP port (bind 127.0.0.1:0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Simulator:
    """A running simulator process: URLs, PID, control helpers, `stop()` and context-manager use."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log_path: Path, tmpdir: Path | None) -> None:
        self.proc = proc
        self.port = port
        self.pid = proc.pid
        self.log_path = log_path
        self.root_url = f"http://127.0.0.1:{port}"
        self.base_url = f"{self.root_url}/v1.0"
        self._tmpdir = tmpdir

    # ------------------------------------------------------------------ lifecycle
    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait, then SIGKILL if it lingers; removes the temporary tenant file."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> Simulator:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the simulator's log, for failure messages."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # ------------------------------------------------------------------ control endpoints
    def control(self, method: str, path: str, body: Any = None, timeout: float = 60.0) -> dict[str, Any]:
        """Call `/_sim/<path>`; returns the JSON answer. Raises RuntimeError with the body on an error status."""
        url = f"{self.root_url}/_sim/{path.lstrip('/')}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method.upper(),  # noqa: S310 (loopback URL built here)
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (loopback URL built here)
                payload = resp.read()
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{method} /_sim/{path} -> {exc.code}: {exc.read()[:2000]!r}") from None
        answer = json.loads(payload) if payload.strip() else {}
        return answer if isinstance(answer, dict) else {"value": answer}

    def stats(self) -> dict[str, Any]:
        """`GET /_sim/stats`."""
        return self.control("GET", "stats")

    def reset_stats(self) -> dict[str, Any]:
        """`POST /_sim/stats/reset`."""
        return self.control("POST", "stats/reset")

    def configure(self, **knobs: Any) -> dict[str, Any]:
        """`PATCH /_sim/config` with the given knobs; returns all knobs."""
        return self.control("PATCH", "config", knobs)

    def throttle_clock(self, *, frozen: bool | None = None, advance: float = 0.0) -> dict[str, Any]:
        """`POST /_sim/throttle/clock`: freeze or release the throttle's clock and move it by `advance` s."""
        body: dict[str, Any] = {"advance": advance}
        if frozen is not None:
            body["frozen"] = frozen
        return self.control("POST", "throttle/clock", body)

    def clock(self, *, frozen: bool | None = None, advance: float = 0.0) -> dict[str, Any]:
        """`POST /_sim/clock`: freeze or release the simulator's one clock and move it by `advance` s; timers
        that fall due on the way (reauthorization challenges, delayed notifications) run before it answers."""
        body: dict[str, Any] = {"advance": advance}
        if frozen is not None:
            body["frozen"] = frozen
        return self.control("POST", "clock", body)

    def state(self, *, users: bool = True) -> dict[str, Any]:
        """`GET /_sim/state`: the tenant as the simulator holds it."""
        return self.control("GET", "state" if users else "state?users=false")

    def register_passkey(self, user_id: str, **fields: Any) -> dict[str, Any]:
        """`POST /_sim/users/{id}/fido2Methods`: the user registers a passkey."""
        return self.control("POST", f"users/{user_id}/fido2Methods", fields)

    def invalidate_delta(self) -> int:
        """`POST /_sim/delta/invalidate`; returns the new generation."""
        return int(self.control("POST", "delta/invalidate")["generation"])

    def lifecycle(self, subscription_id: str, event: str) -> None:
        """`POST /_sim/subscriptions/{id}/lifecycle`."""
        self.control("POST", f"subscriptions/{subscription_id}/lifecycle", {"lifecycleEvent": event})

    def bulk_rename(self, from_domain: str, to_domain: str, *, notify: bool = True) -> dict[str, Any]:
        """`POST /_sim/users/bulk_rename` by domain."""
        return self.control("POST", "users/bulk_rename",
                            {"from_domain": from_domain, "to_domain": to_domain, "notify": notify})


def start_simulator(tenant: dict[str, Any] | Path, *, port: int | None = None,
                    log_path: Path | None = None) -> Simulator:
    """Start `python -m graphsim` on a free (or given) loopback port and wait until it listens.

    A dict tenant is written to a temporary file (removed by `stop()`). The simulator exits by itself if
    the calling process dies without stopping it. Readiness means the port
    accepts connections *and* the process is ours and alive, so a stale server on the port cannot pass
    for it. Fails after START_TIMEOUT_S with the end of the log.
    """
    tmpdir: Path | None = None
    if isinstance(tenant, dict):
        tmpdir = Path(tempfile.mkdtemp(prefix="graphsim-"))
        tenant_path = tmpdir / "tenant.json"
        tenant_path.write_text(json.dumps(tenant), encoding="utf-8")
    else:
        tenant_path = Path(tenant).resolve()
    if log_path is None:
        if tmpdir is None:
            tmpdir = Path(tempfile.mkdtemp(prefix="graphsim-"))
        log_path = tmpdir / "graphsim.log"
    port = port or free_port()
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        raise RuntimeError(f"port {port} is already in use")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    with Path(log_path).open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "graphsim", "--port", str(port), "--tenant", str(tenant_path),
                                 "--parent-pid", str(os.getpid())],
                                cwd=REPO_ROOT, stdout=sink, stderr=subprocess.STDOUT, env=env)
    sim = Simulator(proc, port, Path(log_path), tmpdir)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = sim.log_tail()
            sim.stop()
            raise RuntimeError(f"the simulator exited with {proc.returncode}:\n{tail}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return sim
        time.sleep(0.05)
    tail = sim.log_tail()
    sim.stop()
    raise RuntimeError(f"the simulator did not listen on port {port} within {START_TIMEOUT_S:.0f} s:\n{tail}")
