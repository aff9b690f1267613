"""`python -m devhost up`: the local stack for a person at a terminal, until Ctrl-C.

Starts Azurite and the Graph simulator (the bundled demo tenant unless `--tenant` names another) on free
loopback ports, serves the function app on `--port` (default 7071, as `func start` would) with its queue
drained, and writes the settings a second shell needs to `.demo/local.env` (mode 600):

    python -m devhost up &            # or in its own terminal
    source .demo/local.env
    python -m shared verify

The webhook secrets are random for each start; the notification URLs point at the served app, so the
simulator's change notifications reach it and `python -m shared subscribe` works. The served app signs in to
the simulator with its mode's roles only (`devhost.graph_tokens.app_token`); the settings file carries the
administrator's delegated token instead (`admin_token`), since the second shell is theirs. Not deployed.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import shlex
import signal
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TENANT = ROOT / "graphsim" / "tenants" / "demo.json"
DEFAULT_ENV_FILE = ROOT / ".demo" / "local.env"


def local_settings(*, app_url: str, policy: Path) -> dict[str, str]:
    """The app settings of a local run beside `devhost.stack.stack_settings`: every other value a deployed app
    would have, pointing at loopback."""
    return {
        "POLICY_FILE": str(policy),
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


async def up(*, port: int, tenant_file: Path, policy: Path, env_file: Path) -> int:
    """Run the stack until SIGINT or SIGTERM; everything started is stopped on the way out."""
    from devhost.graph_tokens import admin_token
    from devhost.stack import local_stack

    workdir = Path(tempfile.mkdtemp(prefix="passkey-guard-local-"))
    try:
        async with local_stack(tenant_file, settings=local_settings(app_url=f"http://127.0.0.1:{port}", policy=policy),
                               port=port, ensure_store=True, workdir=workdir) as stack:
            assert stack.host is not None
            # The second shell is the administrator's: its CLI signs in as them, not as the app (whose token
            # carries only its mode's roles), as `az login` would in front of a real tenant.
            write_env_file(env_file, {**stack.settings, "GRAPH_DEV_TOKEN": admin_token(stack.tenant_id)})
            print(f"Azurite pid {stack.azurite.pid}, Graph simulator pid {stack.sim.pid} at {stack.sim.base_url} "
                  f"(tenant {stack.tenant_id})\n"
                  f"Function app at {stack.host.url}/api, queue drained\n"
                  f"Settings for another shell: source {env_file}\nCtrl-C stops everything.", flush=True)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
            return 0
    finally:
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
    try:
        return asyncio.run(up(port=args.port, tenant_file=args.tenant, policy=args.policy.resolve(),
                              env_file=args.env_file))
    finally:
        with contextlib.suppress(FileNotFoundError):
            args.env_file.unlink()  # its secrets and ports die with the stack


if __name__ == "__main__":
    sys.exit(main())
