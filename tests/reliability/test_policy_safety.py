"""Policy safety end to end, as properties over random current and desired states, with the real apply
against the Graph simulator (the pure-core versions are in tests/policy/test_plan_properties.py):

* an applied plan never removes an AAGUID that the document did not explicitly remove;
* a plan refused for lockout, and an empty plan, write nothing;
* an apply right after an apply is a no-op that writes nothing.

The simulator's state is the ground truth: the allow-list is read from `/_sim/state`, and writes are
counted by the simulator, not by us.
"""
from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.errors import LockoutRefused
from shared.policy.apply import apply_document
from tests.e2e.stack import ANDROID, IOS, YUBI, running_stack, tenant, user
from tests.reliability.helpers import GROUPS, REPO
from tests.reliability.summary import record, soak_factor

FEITIAN = "ee882879-721c-4913-9775-3dfcce97072a"
ONEPASSWORD = "bada5566-a7aa-401f-bd96-45619a55120d"
POOL = [YUBI, ANDROID, IOS, FEITIAN, ONEPASSWORD]
OTHERS = [YUBI, FEITIAN, ONEPASSWORD]  # keys a document may keep or remove (Authenticator must stay)
FIDO2_PATH = "/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/fido2"
FIDO2_TYPE = "#microsoft.graph.fido2AuthenticationMethodConfiguration"
EXAMPLES = 25 * soak_factor()
FIGURES: dict[str, int] = {"examples": 0, "applies": 0, "refused": 0, "empty": 0, "violations": 0}


@pytest.fixture(scope="module")
async def policy_stack(azurite: Any) -> AsyncIterator[Any]:
    """One simulator and app for every example (each example first sets the tenant's current state)."""
    users = [user(1, key=YUBI), user(2, key=FEITIAN), user(3, key=None)]
    async with running_stack(azurite, tenant(users, groups=copy.deepcopy(GROUPS)), drain=False) as stack:
        yield stack
    if FIGURES["examples"]:
        record("policy_safety_e2e", area="policy", runs=FIGURES["applies"],
               survived=FIGURES["applies"] - FIGURES["violations"], data_lost=FIGURES["violations"],
               detail=dict(FIGURES))


@st.composite
def current_states(draw: st.DrawFn) -> dict[str, Any]:
    """A FIDO2 configuration as some administrator left it (legacy shape)."""
    return {"@odata.type": FIDO2_TYPE, "state": draw(st.sampled_from(["enabled", "disabled"])),
            "isSelfServiceRegistrationAllowed": draw(st.booleans()), "isAttestationEnforced": draw(st.booleans()),
            "keyRestrictions": {"isEnforced": draw(st.booleans()),
                                "enforcementType": draw(st.sampled_from(["allow", "allow", "block"])),
                                "aaGuids": draw(st.lists(st.sampled_from(POOL), unique=True, max_size=4))}}


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """A valid desired state: Authenticator allowed, some other keys kept, some explicitly removed."""
    doc = json.loads((REPO / "policy" / "desired-state.json").read_text())
    doc.pop("$schema", None)
    keep = draw(st.lists(st.sampled_from(OTHERS), unique=True, max_size=2))
    remove = draw(st.lists(st.sampled_from([a for a in OTHERS if a not in keep]), unique=True, max_size=2))
    method = doc["passkeyMethod"]
    method["state"] = draw(st.sampled_from(["enabled", "enabled", "disabled"]))
    method["selfServiceRegistration"] = draw(st.booleans())
    method["attestationEnforced"] = draw(st.booleans())
    method["keyRestrictions"] = {"enforced": True, "enforcementType": "allow", "aaguids": [ANDROID, IOS, *keep],
                                 "remove": remove}
    doc["authenticationStrength"]["allowedAaguids"] = draw(st.sampled_from([[ANDROID, IOS], [ANDROID, IOS, YUBI]]))
    return doc


def fido2_now(stack: Any) -> dict[str, Any]:
    """The FIDO2 configuration as the simulator holds it (the ground truth)."""
    return stack.sim.state(users=False)["authenticationMethodConfigurations"]["fido2"]


def allowed(fido2: dict[str, Any]) -> tuple[str, set[str]] | None:
    """(enforcementType, AAGUIDs) of an enforced restriction, or None when keys are not restricted."""
    kr = fido2.get("keyRestrictions") or {}
    if not kr.get("isEnforced"):
        return None
    return kr.get("enforcementType", "allow"), {a.lower() for a in kr.get("aaGuids") or []}


@settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(current=current_states(), document=documents(), accept=st.booleans())
async def test_applies_never_drop_an_unremoved_aaguid_and_repeat_as_no_ops(policy_stack, current, document, accept):
    """Random current state, random desired state, the real apply against the simulator: every AAGUID the
    tenant allowed and the document did not remove is still allowed; a refused or empty plan writes
    nothing; applying again writes nothing."""
    stack = policy_stack
    await stack.services.graph.send_raw("PATCH", FIDO2_PATH, current, what="set the example's current state")
    before = allowed(fido2_now(stack))
    removed = {a.lower() for a in document["passkeyMethod"]["keyRestrictions"]["remove"]}
    writes = stack.sim.stats()["writes"]
    FIGURES["examples"] += 1
    try:
        result = await apply_document(stack.services, trigger="test", document=document, accept_lockout=accept)
    except LockoutRefused:
        FIGURES["refused"] += 1
        assert not accept and stack.sim.stats()["writes"] == writes  # refused: nothing written
        assert allowed(fido2_now(stack)) == before
        return
    FIGURES["applies"] += 1
    after = allowed(fido2_now(stack))
    violation = bool(before and after and before[0] == after[0] and not (before[1] - removed) <= after[1])
    FIGURES["violations"] += violation
    assert not violation, (before, after, removed)
    if result["result"] == "no-op":
        FIGURES["empty"] += 1
        assert stack.sim.stats()["writes"] == writes  # an empty plan writes nothing
    writes = stack.sim.stats()["writes"]
    again = await apply_document(stack.services, trigger="test", document=document, accept_lockout=accept)
    FIGURES["empty"] += again["result"] == "no-op"
    assert again["result"] == "no-op" and again["writes"] == [], again["table"]
    assert stack.sim.stats()["writes"] == writes  # the repeat planned nothing and wrote nothing
