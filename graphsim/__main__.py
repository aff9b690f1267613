"""`python -m graphsim --port P --tenant FILE [--host 127.0.0.1]`: run the Graph simulator."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web

from graphsim.app import SimServer, make_app
from graphsim.config import SimConfig
from graphsim.tenant import load_tenant, read_tenant_file

log = logging.getLogger("graphsim")
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, load the tenant, serve until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m graphsim", description="Microsoft Graph simulator (loopback)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tenant", type=Path, required=True, help="tenant JSON file")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--parent-pid", type=int, default=None,
                        help="exit when this process is no longer our parent (no orphans after a killed test run)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if args.host not in LOOPBACK:
        parser.error("the simulator binds loopback only")
    doc = read_tenant_file(args.tenant)
    config = SimConfig()
    try:
        config.update(doc.get("simulator") or {})
        store = load_tenant(doc)
    except ValueError as exc:
        parser.error(str(exc))
    sim = SimServer(store, config)
    log.info("tenant %s: %d users, %d groups; listening on http://%s:%d/v1.0", store.tenant_id, len(store.users),
             len(store.groups), args.host, args.port)
    app = make_app(sim)
    if args.parent_pid:
        app.cleanup_ctx.append(_watch_parent(args.parent_pid))
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None, shutdown_timeout=2.0)
    return 0


def _watch_parent(parent_pid: int) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context that SIGTERMs this process once `parent_pid` stops being its parent."""
    async def ctx(_app: web.Application) -> AsyncIterator[None]:
        async def watch() -> None:
            while True:  # polling: there is no event for "my parent died"
                if os.getppid() != parent_pid:
                    break
                await asyncio.sleep(1.0)
            log.warning("parent process %d is gone; shutting down", parent_pid)
            os.kill(os.getpid(), signal.SIGTERM)
        task = asyncio.get_running_loop().create_task(watch())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return ctx


if __name__ == "__main__":
    sys.exit(main())
