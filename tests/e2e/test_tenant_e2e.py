"""The wrong tenant is caught: with TENANT_ID naming one tenant and Graph (or the token) answering for another,
verify, plan, apply and sweep refuse, name both ids, and write nothing to Graph or to storage."""
from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from shared.__main__ import exit_code_of
from shared.errors import WrongTenant
from shared.policy.apply import APPLY_LEASE, apply_document
from shared.policy.jobs import submit_plan
from shared.policy.planning import plan
from shared.policy.rollback import rollback
from shared.policy.verify import verify
from shared.upn.dispatch import handle_message
from shared.upn.messages import users_message
from shared.upn.subscriptions import SUBSCRIPTION_LEASE, ensure_subscription
from shared.upn.sweep import sweep
from shared.upn.tracker import track_flags
from shared.web import error_answer
from tests.e2e.stack import Stack, running_stack, uid
from tests.e2e.test_permissions_e2e import ENFORCE, write_routes
from tests.e2e.test_policy_e2e import doc_with, legacy_tenant
from tests.graph.test_permissions import unsigned_jwt
from tests.reliability.helpers import snapshot_storage, storage_diff

CONFIGURED = "22222222-3333-4444-8555-666666666666"  # TENANT_ID; the simulator answers for another tenant

UseCase = Callable[[Stack], Awaitable[Any]]
USE_CASES: dict[str, UseCase] = {
    "verify": lambda stack: verify(stack.services, trigger="test", document=doc_with()),
    "plan": lambda stack: plan(stack.services, trigger="test", document=doc_with()),
    "apply": lambda stack: apply_document(stack.services, trigger="test", document=doc_with(), accept_lockout=True),
    "sweep": lambda stack: sweep(stack.services, trigger="test"),
}
#: The other entry points: the HTTP plan job, rollback, the queue processor, the tracker, subscribe.
MORE_USE_CASES: dict[str, UseCase] = {
    "submit_plan": lambda stack: submit_plan(stack.services),
    "rollback": lambda stack: rollback(stack.services, "0" * 32, trigger="test", accept_lockout=True),
    "process": lambda stack: handle_message(stack.services, json.dumps(
        {**users_message([{"id": uid(1)}], source="sweep"), "tenant": stack.tenant_id})),
    "track": lambda stack: track_flags(stack.services),
    "subscribe": lambda stack: ensure_subscription(stack.services),
}


async def _refuses_and_writes_nothing(stack: Stack, use_case: UseCase, configured: str, answering: str
                                      ) -> WrongTenant:
    """Run `use_case`, expect WrongTenant naming both ids, and prove nothing was written anywhere."""
    connection = stack.services.settings.storage.connection_string
    before = {t: await snapshot_storage(connection, t) for t in (configured, answering)}
    with pytest.raises(WrongTenant) as caught:
        await use_case(stack)
    assert configured in caught.value.message and answering in caught.value.message
    stats = stack.sim.stats()
    assert stats["writes"] == 0 and write_routes(stats) == []
    for t in (configured, answering):
        assert storage_diff(before[t], await snapshot_storage(connection, t)) == {}
    return caught.value


@pytest.mark.parametrize("name", sorted(USE_CASES))
async def test_a_graph_answering_for_another_tenant_is_refused(azurite, name):
    """TENANT_ID differs from the tenant Graph answers for: the use case refuses naming both ids, writes nothing."""
    doc = legacy_tenant()
    async with running_stack(azurite, doc, drain=False, TENANT_ID=CONFIGURED) as stack:
        error = await _refuses_and_writes_nothing(stack, USE_CASES[name], CONFIGURED, doc["tenantId"])
        answer = error_answer(error)
        assert answer.body["error"]["code"] == "wrongTenant"
        assert exit_code_of(error) == 2  # a settings problem: retrying cannot help


@pytest.mark.parametrize("name", sorted(MORE_USE_CASES))
async def test_every_other_entry_point_refuses_the_wrong_tenant_too(azurite, name):
    """The HTTP plan job, rollback, processor, tracker and subscribe refuse the wrong tenant; nothing is written."""
    doc = legacy_tenant()
    async with running_stack(azurite, doc, drain=False, TENANT_ID=CONFIGURED) as stack:
        await _refuses_and_writes_nothing(stack, MORE_USE_CASES[name], CONFIGURED, doc["tenantId"])


@pytest.mark.parametrize("lease", [APPLY_LEASE, SUBSCRIPTION_LEASE])
async def test_the_tenant_is_confirmed_before_a_lease_is_taken(azurite, lease):
    """With the lease held under TENANT_ID, apply and subscribe still say wrongTenant: no lease row is touched."""
    doc = legacy_tenant()
    use_case = USE_CASES["apply"] if lease == APPLY_LEASE else MORE_USE_CASES["subscribe"]
    async with running_stack(azurite, doc, drain=False, TENANT_ID=CONFIGURED) as stack:
        assert await stack.services.store.checkpoints.acquire_lease(lease, "someone-else", 60)
        await _refuses_and_writes_nothing(stack, use_case, CONFIGURED, doc["tenantId"])


async def test_a_token_issued_for_another_tenant_is_refused_before_any_request(azurite):
    """The token's `tid` names another tenant: refused naming both ids before Graph is even asked."""
    doc = legacy_tenant()
    token = unsigned_jwt({"aud": "https://graph.microsoft.com", "tid": CONFIGURED, "idtyp": "app", "roles": ENFORCE})
    async with running_stack(azurite, doc, drain=False, GRAPH_DEV_TOKEN=token) as stack:
        for use_case in USE_CASES.values():
            await _refuses_and_writes_nothing(stack, use_case, doc["tenantId"], CONFIGURED)
        assert stack.sim.stats()["calls"]["total"] == 0


async def test_the_right_tenant_is_confirmed_once_per_process(azurite):
    """With TENANT_ID, the token's tid and Graph agreeing, the use cases run and /organization is read once."""
    doc = legacy_tenant()
    token = unsigned_jwt({"aud": "https://graph.microsoft.com", "tid": doc["tenantId"], "idtyp": "app",
                          "roles": ENFORCE})
    async with running_stack(azurite, doc, drain=False, GRAPH_DEV_TOKEN=token) as stack:
        assert (await verify(stack.services, trigger="test", document=doc_with()))["checks"]
        assert (await plan(stack.services, trigger="test", document=doc_with()))["plan"]["writes"]
        await sweep(stack.services, trigger="test")
        assert stack.sim.stats()["calls"]["by_route"].get("GET /organization") == 1


async def test_health_is_degraded_by_the_wrong_tenant(azurite):
    """The health probe's first Graph request is the tenant check: a wrong tenant degrades it, code wrongTenant."""
    from tests.e2e.test_health import READER

    async with running_stack(azurite, legacy_tenant(), drain=False, TENANT_ID=CONFIGURED) as stack:
        status, text, _ = await stack.get("health", principal=None)
        assert status == 503 and json.loads(text)["status"] == "degraded"
        status, text, _ = await stack.get("health/details", headers=READER)
        assert json.loads(text)["graph"] == {"ok": False, "error": "wrongTenant"}


async def test_the_cli_names_both_tenants_and_exits_2(azurite):
    """`python -m shared verify` against another tenant's Graph: exit 2, both ids named, nothing written."""
    from tests.e2e.test_cli import cli, cli_env

    doc = legacy_tenant()
    async with running_stack(azurite, doc, drain=False) as stack:
        env = {**cli_env(stack, azurite.connection_string), "TENANT_ID": CONFIGURED}
        before = await snapshot_storage(azurite.connection_string, CONFIGURED)
        done = await cli(env, "verify")
        assert done.returncode == 2, done.stderr
        assert "wrongTenant" not in done.stdout and CONFIGURED in done.stderr and doc["tenantId"] in done.stderr
        json_done = await cli(env, "plan", "--json")
        assert json_done.returncode == 2 and json.loads(json_done.stdout)["error"]["code"] == "wrongTenant"
        assert storage_diff(before, await snapshot_storage(azurite.connection_string, CONFIGURED)) == {}
        assert stack.sim.stats()["writes"] == 0
