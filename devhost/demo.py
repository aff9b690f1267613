"""`make demo`: Passkey Guard's main jobs against the local stack, with a readable report.

Starts Azurite and the Graph simulator (bundled demo tenant) on free loopback ports, serves the
function app through devhost, and then, as an administrator would:

1. verifies the tenant against the desired state (policy/demo-desired-state.json);
2. plans, and shows the field-by-field diff;
3. applies, reads back and verifies again;
4. seeds the UPN snapshot, subscribes to user changes, renames three users through Graph and shows the
   flags the notifications produced; one user re-registers and the tracker resolves their flag.

Everything it started is stopped by PID at the end, also on failure.
"""
from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from devhost.stack import LocalStack
    from shared.services import Services

ROOT = Path(__file__).resolve().parent.parent
TENANT_FILE = ROOT / "graphsim" / "tenants" / "demo.json"
POLICY = ROOT / "policy" / "demo-desired-state.json"


def say(text: str = "") -> None:
    print(text, flush=True)


def heading(text: str) -> None:
    say()
    say(text)
    say("=" * len(text))


async def demo() -> int:
    """Start the stack, show the four steps, stop everything it started (also on failure)."""
    from devhost.stack import local_stack

    workdir = Path(tempfile.mkdtemp(prefix="passkey-guard-demo-"))
    settings = {"GRAPH_DEV_TOKEN": "demo", "POLICY_FILE": str(POLICY),
                "NOTIFICATION_CLIENT_STATE": "hqb1uF9grYyflHx2Uoo7B-YBrJ_xwIakrppaZ-fk",
                "TICKET_WEBHOOK_SECRET": "ed2xs2b69ZzWenLxEfN7aOz-ExDO4YHs-FvkN0vl"}
    pids: tuple[int | None, int | None] = (None, None)
    try:
        async with local_stack(TENANT_FILE, settings=settings, poll_seconds=0.1, ensure_store=True,
                               workdir=workdir) as stack:
            pids = (stack.sim.pid, stack.azurite.pid)
            return await _show(stack)
    finally:
        say(f"Stopped the simulator (pid {pids[0]}) and Azurite (pid {pids[1]}).")


async def _policy_steps(services: Services) -> tuple[bool, str]:
    """Steps 1 to 3: verify, plan, apply with read-back; (verified after apply, the second apply's result)."""
    from shared.policy.apply import apply_document
    from shared.policy.planning import plan
    from shared.policy.verify import verify

    heading("1. Verify the tenant against the desired state")
    before = await verify(services, trigger="demo")
    say(before["markdown"])

    heading("2. Plan")
    planned = await plan(services, trigger="demo")
    say(planned["table"])
    for warning in planned["plan"].get("warnings", []):
        say(f"warning: {warning['message']}")

    heading("3. Apply, read back, verify")
    applied = await apply_document(services, trigger="demo")
    say(f"run {applied['runId']}: {applied['result']} ({len(applied['writes'])} Graph writes)")
    for write in applied["writes"]:
        say(f"  - {write['op']} {write.get('target') or ''}")
    after = await verify(services, trigger="demo")
    say(f"verification after apply: {after['summary']['text']}")
    again = await apply_document(services, trigger="demo")
    say(f"second apply: {again['result']} (no Graph write)")
    return bool(after["passed"]), str(again["result"])


async def _show(stack: LocalStack) -> int:
    """The demo's four steps on a running stack; 0 when everything worked as expected."""
    import json

    from msgraph.generated.models.user import User

    from shared.upn.flag_views import list_flags
    from shared.upn.subscriptions import ensure_subscription
    from shared.upn.sweep import sweep
    from shared.upn.tracker import track_flags

    sim, services, host = stack.sim, stack.services, stack.host
    assert host is not None
    say(f"Local stack: Azurite pid {stack.azurite.pid}, Graph simulator pid {sim.pid} at {sim.base_url}")
    services.settings = replace(services.settings, notification_url=f"{host.url}/api/graph/notifications",
                                lifecycle_notification_url=f"{host.url}/api/graph/lifecycle")
    say(f"Function app served by devhost at {host.url}/api")

    passed, second = await _policy_steps(services)

    heading("4. UPN changes")
    seeded = await sweep(services, trigger="demo")
    say(f"first sync seeded {seeded['users']} users' UPNs (nobody is flagged on first sight)")
    sub = await ensure_subscription(services)
    say(f"Graph subscription {sub['id']} {sub['action']}, expires {sub['expirationDateTime']}")
    users = [u for u in json.loads(TENANT_FILE.read_text())["users"]]
    with_keys = [u for u in users if u.get("authentication", {}).get("fido2Methods")][:2]
    without = next(u for u in users if not u.get("authentication", {}).get("fido2Methods"))
    for u in (*with_keys, without):
        new = u["userPrincipalName"].replace("@contoso.example", "@fabrikam.example")
        await services.graph.client.users.by_user_id(u["id"]).patch(User(user_principal_name=new))
        say(f"renamed {u['userPrincipalName']} -> {new}")
    deadline = time.monotonic() + 180  # bounds a failure only: a busy machine delivers slowly
    flags: list[dict] = []
    while time.monotonic() < deadline:  # flagged at once from the registration report, then the slow lane reads
        flags = (await list_flags(services, status=None))["value"]
        if len(flags) >= len(with_keys) and all(f["passkeyDetails"] == "complete" for f in flags):
            break
        await asyncio.sleep(0.2)
    say(f"\n{len(flags)} user(s) flagged (the renamed user without a passkey needs nothing); the registration "
        "report named them at once, the slow lane then read their passkeys:")
    for f in flags:
        say(f"  {f['status']:<8} {f['oldUpn']} -> {f['newUpn']}: {len(f['passkeys'])} passkey(s) to re-register")
    if flags:
        first = flags[0]
        for key in first["passkeys"]:
            await services.graph.client.users.by_user_id(first["userId"]).authentication.fido2_methods \
                .by_fido2_authentication_method_id(key["id"]).delete()
        sim.register_passkey(first["userId"], aaGuid="de1e552d-db1d-4423-a619-566b625cdc84",
                             displayName="Microsoft Authenticator", model="Microsoft Authenticator")
        tracked = await track_flags(services)
        say(f"\n{first['newUpn']} deleted the old passkey and registered a new one; tracker: {tracked}")
        for f in (await list_flags(services, status=None))["value"]:
            say(f"  {f['status']:<8} {f['newUpn']}")
    stats = sim.stats()
    heading("Summary")
    say(f"Graph calls: {stats['calls']['total']}, resource units: {stats['resource_units']}, "
        f"writes: {stats['writes']}, notifications delivered: {stats['notifications']['delivered']}")
    ok = passed and second == "no-op" and len(flags) == len(with_keys)
    say("Demo finished: " + ("everything worked as expected." if ok else "SOMETHING DID NOT WORK, see above."))
    return 0 if ok else 1


def main() -> int:
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return asyncio.run(demo())


if __name__ == "__main__":
    sys.exit(main())
