"""`python -m devhost up`: the local stack for a person at a terminal, until Ctrl-C.

Starts Azurite and the Graph simulator (the bundled demo tenant unless `--tenant` names another) on free
loopback ports, serves the function app on `--port` (default 7071, as `func start` would) with its queue
drained, and writes the settings a second shell needs to `.demo/local.env` (mode 600):

    python -m devhost up &            # or in its own terminal
    source .demo/local.env
    python -m shared verify

The webhook secrets are random for each start; the notification URLs point at the served app, so the
simulator's change notifications reach it and `python -m shared subscribe` works. Not deployed.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import shlex
import signal
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TENANT = ROOT / "graphsim" / "tenants" / "demo.json"
DEFAULT_ENV_FILE = ROOT / ".demo" / "local.env"


def local_settings(*, tenant_id: str, graph_url: str, storage: str, app_url: str, policy: Path) -> dict[str, str]:
    """The app settings of a local run: every value a deployed app would have, pointing at loopback."""
    return {
        "TENANT_ID": tenant_id, "GRAPH_BASE_URL": graph_url, "STATE_STORAGE": storage, "POLICY_FILE": str(policy),
        "NOTIFICATION_URL": f"{app_url}/api/graph/notifications",
        "LIFECYCLE_NOTIFICATION_URL": f"{app_url}/api/graph/lifecycle",
        "NOTIFICATION_CLIENT_STATE": secrets.token_urlsafe(48), "TICKET_WEBHOOK_SECRET": secrets.token_urlsafe(48),
    }


def write_env_file(path: Path, values: dict[str, str]) -> None:
    """`export NAME=value` lines a shell can `source`, readable by the owner only (it holds secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in values.items()))


async def up(*, port: int, tenant_file: Path, tenant_id: str, policy: Path, env_file: Path) -> int:
    """Run the stack until SIGINT or SIGTERM; everything started is stopped on the way out."""
    from azure.storage.queue.aio import QueueClient

    from devhost.azurite import start_azurite
    from devhost.host import DevHost
    from graphsim.launcher import start_simulator
    from shared.config import Settings
    from shared.services import Services, use_services

    workdir = Path(tempfile.mkdtemp(prefix="passkey-guard-local-"))
    azurite = await asyncio.to_thread(start_azurite, workdir=workdir)
    sim = await asyncio.to_thread(start_simulator, tenant_file, log_path=workdir / "graphsim.log")
    host: DevHost | None = None
    services: Services | None = None
    try:
        values = local_settings(tenant_id=tenant_id, graph_url=sim.base_url, storage=azurite.connection_string,
                                app_url=f"http://127.0.0.1:{port}", policy=policy)
        services = Services.from_settings(Settings.from_env(values))
        use_services(services)
        await services.store.ensure()
        host = DevHost(queue_client_factory=lambda name: QueueClient.from_connection_string(
            azurite.connection_string, name))
        url = await host.start(port=port)
        write_env_file(env_file, values)
        print(f"Azurite pid {azurite.pid}, Graph simulator pid {sim.pid} at {sim.base_url} (tenant {tenant_id})\n"
              f"Function app at {url}/api, queue drained\n"
              f"Settings for another shell: source {env_file}\nCtrl-C stops everything.", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        return 0
    finally:
        if host is not None:
            await host.stop()
        if services is not None:
            use_services(None)
            await services.close()
        await asyncio.to_thread(sim.stop)
        await asyncio.to_thread(azurite.stop)
        print("Stopped the function app, the simulator and Azurite.", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devhost", description="Passkey Guard's local stack")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("up", help="start Azurite, the Graph simulator and the function app until Ctrl-C")
    run.add_argument("--port", type=int, default=7071, help="the function app's port (default 7071)")
    run.add_argument("--tenant", type=Path, default=DEFAULT_TENANT, help="the simulator's tenant file")
    run.add_argument("--policy", type=Path, default=ROOT / "policy" / "desired-state.json",
                     help="the desired-state document (POLICY_FILE)")
    run.add_argument("--env-file", type=Path, default=DEFAULT_ENV_FILE, help="where to write the settings")
    args = parser.parse_args(argv)
    tenant_id = json.loads(args.tenant.read_text())["tenantId"]
    try:
        return asyncio.run(up(port=args.port, tenant_file=args.tenant, tenant_id=tenant_id,
                              policy=args.policy.resolve(), env_file=args.env_file))
    finally:
        with contextlib.suppress(FileNotFoundError):
            args.env_file.unlink()  # its secrets and ports die with the stack


if __name__ == "__main__":
    sys.exit(main())
