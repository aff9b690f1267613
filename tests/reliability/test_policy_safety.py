"""Policy safety end to end, as properties over random current and desired states, with the real apply
against the Graph simulator (the pure-core versions are in tests/policy/test_plan_properties.py):

* an applied plan never removes an AAGUID that the document did not explicitly remove;
* a plan refused for lockout, and an empty plan, write nothing;
* an apply right after an apply is a no-op that writes nothing.

Both shapes of the FIDO2 configuration: the legacy one, and a tenant migrated to passkey profiles, starting
from the live capture in tests/data/real (two profiles, `allowedPasskeyProfiles`, a duplicate AAGUID in the
default profile's list): the managed profile keeps every AAGUID not removed, the other profiles are left
exactly as they were.

The simulator's state is the ground truth: the allow-list is read from `/_sim/state`, and writes are
counted by the simulator, not by us.
"""
from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
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
FIGURES: dict[str, int] = {"examples": 0, "applies": 0, "refused": 0, "empty": 0, "violations": 0,
                           "profileExamples": 0}
CAPTURE = REPO / "tests" / "data" / "real" / "real-tenant-authenticationmethodspolicy-v1-graph2otel.json"


@pytest.fixture(scope="module")
async def policy_stack(azurite: Any) -> AsyncIterator[Any]:
    """One simulator and app for every example (each example first sets the tenant's current state)."""
    users = [user(1, key=YUBI), user(2, key=FEITIAN), user(3, key=None)]
    async with running_stack(azurite, tenant(users, groups=copy.deepcopy(GROUPS)), drain=False) as stack:
        yield stack
    _record()


def _record() -> None:
    """Both shapes' examples in one entry (each module fixture calls it as it finishes; the last one wins)."""
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



# ------------------------------------------------------------------------------------------ passkey profiles
def captured_fido2() -> dict[str, Any]:
    """The live capture's Fido2 configuration, verbatim but for the OData context annotations."""
    policy = json.loads(CAPTURE.read_text(encoding="utf-8"))
    (fido2,) = [c for c in policy["authenticationMethodConfigurations"] if c["id"] == "Fido2"]
    return {k: v for k, v in fido2.items() if not k.endswith("@odata.context")}


CAPTURED = captured_fido2()
PROFILE_IDS = [p["id"] for p in CAPTURED["passkeyProfiles"]]
PROFILE_NAMES = [p["name"] for p in CAPTURED["passkeyProfiles"]]


@pytest.fixture(scope="module")
async def profiles_stack(azurite: Any) -> AsyncIterator[Any]:
    """One simulator and app on a tenant migrated to passkey profiles, seeded with the live capture."""
    users = [user(1, key=YUBI), user(2, key=FEITIAN), user(3, key=None)]
    doc = tenant(users, groups=copy.deepcopy(GROUPS))
    doc["authenticationMethodConfigurations"]["fido2"] = copy.deepcopy(CAPTURED)
    async with running_stack(azurite, doc, drain=False) as stack:
        yield stack
    _record()


def _profiles_body(fido2: dict[str, Any]) -> dict[str, Any]:
    return {"@odata.type": FIDO2_TYPE,
            **{k: copy.deepcopy(fido2[k]) for k in ("passkeyProfiles", "defaultPasskeyProfile", "includeTargets")}}


@st.composite
def profile_states(draw: st.DrawFn) -> dict[str, Any]:
    """The capture's two profiles with their settings redrawn; AAGUID lists may repeat an AAGUID, as the
    capture's does."""
    fido2 = copy.deepcopy(CAPTURED)
    for profile in fido2["passkeyProfiles"]:
        profile["attestationEnforcement"] = draw(st.sampled_from(["disabled", "registrationOnly"]))
        profile["keyRestrictions"] = {"isEnforced": draw(st.booleans()),
                                      "enforcementType": draw(st.sampled_from(["allow", "allow", "block"])),
                                      "aaGuids": draw(st.lists(st.sampled_from(POOL), max_size=5))}
    return _profiles_body(fido2)


def profile_restrictions(stack: Any) -> dict[str, tuple[str, set[str]] | None]:
    """Each profile's enforced restriction (as `allowed`) as the simulator holds it, by profile id."""
    fido2 = fido2_now(stack)
    return {p["id"]: allowed(p) for p in fido2.get("passkeyProfiles") or []}


@settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@example(current=_profiles_body(CAPTURED), document=None, profile=None, accept=True)
@given(current=profile_states(), document=documents(), profile=st.sampled_from([None, *PROFILE_NAMES]),
       accept=st.booleans())
async def test_applies_in_a_profiles_tenant_keep_unremoved_aaguids_and_other_profiles(profiles_stack, current,
                                                                                     document, profile, accept):
    """Tenant migrated to passkey profiles (the live capture first, then random profiles): the profile the
    document manages keeps every AAGUID it allowed that the document did not remove, every other profile is
    left exactly as it was, a refused plan writes nothing and applying again writes nothing."""
    stack = profiles_stack
    if document is None:  # the explicit example: the shipped desired state against the capture as it is
        document = json.loads((REPO / "policy" / "desired-state.json").read_text())
        document.pop("$schema", None)
    if profile is not None:
        document["passkeyMethod"]["passkeyProfile"] = profile
    await stack.services.graph.send_raw("PATCH", FIDO2_PATH, current, what="set the example's current state")
    before = profile_restrictions(stack)
    managed = PROFILE_IDS[PROFILE_NAMES.index(profile)] if profile else fido2_now(stack)["defaultPasskeyProfile"]
    others_before = {p["id"]: p for p in fido2_now(stack)["passkeyProfiles"] if p["id"] != managed}
    removed = {a.lower() for a in document["passkeyMethod"]["keyRestrictions"].get("remove", [])}
    writes = stack.sim.stats()["writes"]
    FIGURES["examples"] += 1
    FIGURES["profileExamples"] += 1
    try:
        result = await apply_document(stack.services, trigger="test", document=document, accept_lockout=accept)
    except LockoutRefused:
        FIGURES["refused"] += 1
        assert not accept and stack.sim.stats()["writes"] == writes  # refused: nothing written
        assert profile_restrictions(stack) == before
        return
    FIGURES["applies"] += 1
    after = profile_restrictions(stack)
    others_after = {p["id"]: p for p in fido2_now(stack)["passkeyProfiles"] if p["id"] != managed}
    was, now = before.get(managed), after.get(managed)
    violation = bool(was and now and was[0] == now[0] and not (was[1] - removed) <= now[1]) \
        or others_after != others_before
    FIGURES["violations"] += violation
    assert not violation, (was, now, removed, others_before, others_after)
    if result["result"] == "no-op":
        FIGURES["empty"] += 1
        assert stack.sim.stats()["writes"] == writes
    writes = stack.sim.stats()["writes"]
    again = await apply_document(stack.services, trigger="test", document=document, accept_lockout=accept)
    FIGURES["empty"] += again["result"] == "no-op"
    assert again["result"] == "no-op" and again["writes"] == [], again["table"]
    assert stack.sim.stats()["writes"] == writes
