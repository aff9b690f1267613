"""The README's "Local run" commands, run as written against `python -m devhost up`: each exits with the code
its comment states (0 when it states none), so the documented path from a fresh clone cannot drift from the
code (issue 11)."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- local-run:begin -->\s*```bash\n(.*?)```\s*<!-- local-run:end -->", re.S)


def readme_commands() -> list[tuple[str, int]]:
    """(command, expected exit code) for each `python -m shared` line of the README's local-run block."""
    match = BLOCK.search((ROOT / "README.md").read_text(encoding="utf-8"))
    assert match, "README.md has no local-run block"
    out = []
    for line in match.group(1).splitlines():
        command, _, comment = line.partition("#")
        if command.strip().startswith("python -m shared"):
            code = re.search(r"exit (\d)", comment)
            out.append((command.strip(), int(code.group(1)) if code else 0))
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_env_file(path: Path) -> dict[str, str]:
    """The `export NAME=value` lines devhost wrote (values are shell-quoted)."""
    import shlex

    values = {}
    for line in path.read_text().splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        values[name] = shlex.split(value)[0] if value else ""
    return values


def test_the_readme_local_run_commands_work_as_written(tmp_path):
    """`python -m devhost up`, then every README command in a second shell, with the documented exit codes."""
    commands = readme_commands()
    assert len(commands) >= 6 and any(code == 1 for _, code in commands)
    env_file = tmp_path / "local.env"
    up = subprocess.Popen([sys.executable, "-m", "devhost", "up", "--port", str(free_port()), "--env-file",
                           str(env_file)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while not env_file.exists():
            assert up.poll() is None, up.stdout.read().decode() if up.stdout else ""
            assert time.monotonic() < deadline, "devhost up did not write its settings"
            time.sleep(0.2)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GRAPH_", "STATE_", "TENANT_"))}
        env.update(read_env_file(env_file))
        for command, expected in commands:
            args = command.split()
            run = subprocess.run([sys.executable, *args[1:]], cwd=ROOT, env=env, capture_output=True, text=True,
                                 timeout=600, check=False)
            assert run.returncode == expected, (command, run.returncode, run.stdout[-2000:], run.stderr[-2000:])
            assert "Traceback" not in run.stderr, (command, run.stderr)
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(timeout=120)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()
    assert not env_file.exists(), "devhost up leaves no settings file with secrets behind"
