"""The wrong tenant is caught: with TENANT_ID naming one tenant and Graph (or the token) answering for another,
verify, plan, apply and sweep refuse, name both ids, and write nothing to Graph or to storage."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from shared.__main__ import exit_code_of
from shared.errors import WrongTenant
from shared.policy.service import apply_document, plan, verify
from shared.upn.service import sweep
from shared.web import error_answer
from tests.e2e.stack import Stack, running_stack
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
