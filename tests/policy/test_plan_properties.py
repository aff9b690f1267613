"""Hypothesis properties of the plan: the merge never drops an AAGUID that was not explicitly removed,
writes exist exactly when changes do, applying a plan and planning again gives an empty plan, raw
passkeyTypes strings survive, nobody is locked out without the plan saying so, and plans round-trip."""
from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.policy.aaguids import AUTHENTICATOR_AAGUIDS
from shared.policy.current import aaguid_allowed, read_fido2, strip_volatile
from shared.policy.document import DesiredState, validate_document
from shared.policy.lockout import lockout_impact
from shared.policy.plan import build_plan
from shared.policy.plan_codec import plan_from_json, plan_to_json
from shared.policy.plan_method import merge_aaguids
from shared.policy.plan_model import Plan
from shared.policy.render import plan_to_markdown, render_plan_table
from tests.policy.policy_factories import (
    ANDROID,
    APP,
    BREAK_GLASS,
    FEITIAN,
    FIDO2_TYPE,
    GROUP_A,
    GROUP_B,
    IOS,
    ONEPASSWORD,
    OTHER_STRENGTHS,
    YUBIKEY,
    ca_policy,
    groups_for,
    simulate_apply,
    strength,
)

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
POOL = [ANDROID, IOS, YUBIKEY, FEITIAN, ONEPASSWORD, "00000000-0000-0000-0000-000000000000"]
PASSKEY_TYPES = ["deviceBound,synced", "synced,deviceBound", "deviceBound", "synced", "deviceBound, synced",
                 "unknownFutureValue"]
FIDO2_FIELDS = {"@odata.type", "state", "isSelfServiceRegistrationAllowed", "includeTargets", "excludeTargets",
                "isAttestationEnforced", "keyRestrictions", "passkeyProfiles"}

aaguid = st.sampled_from(POOL)
any_case_aaguid = st.tuples(aaguid, st.booleans()).map(lambda t: t[0].upper() if t[1] else t[0])


@st.composite
def raw_restrictions(draw: st.DrawFn) -> dict[str, Any] | None:
    """A raw keyRestrictions object, sometimes missing, with case variants and duplicates."""
    if draw(st.integers(0, 9)) == 0:
        return None
    return {"isEnforced": draw(st.booleans()), "enforcementType": draw(st.sampled_from(["allow", "block"])),
            "aaGuids": draw(st.lists(any_case_aaguid, max_size=6))}


def raw_target(tid: str, profile_ids: list[str] | None, required: bool) -> dict[str, Any]:
    """A raw include target."""
    t: dict[str, Any] = {"targetType": "group", "id": tid, "isRegistrationRequired": required}
    if profile_ids:
        t["allowedPasskeyProfiles"] = profile_ids
    return t


@st.composite
def raw_fido2(draw: st.DrawFn) -> dict[str, Any]:
    """A raw GET of the fido2 configuration, legacy or profiles shape."""
    profiles_mode = draw(st.booleans())
    raw: dict[str, Any] = {
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#x/$entity", "@odata.type": FIDO2_TYPE,
        "id": "Fido2", "state": draw(st.sampled_from(["enabled", "disabled"])),
        "isSelfServiceRegistrationAllowed": draw(st.booleans()), "isAttestationEnforced": draw(st.booleans()),
        "keyRestrictions": draw(raw_restrictions()),
    }
    profile_ids: list[str] = []
    if profiles_mode:
        count = draw(st.integers(1, 3))
        profiles = []
        for i in range(count):
            pid = f"0000000{i}-0000-0000-0000-000000000001"
            profile_ids.append(pid)
            p: dict[str, Any] = {"id": pid, "name": f"Profile {i}",
                                 "passkeyTypes": draw(st.sampled_from(PASSKEY_TYPES)),
                                 "attestationEnforcement": draw(st.sampled_from(["disabled", "registrationOnly"]))}
            kr = draw(raw_restrictions())
            if kr is not None:
                p["keyRestrictions"] = kr
            if draw(st.booleans()):
                p["vendorExtension"] = {"keep": [i, "me"]}
            profiles.append(p)
        raw["passkeyProfiles"] = profiles
        raw["defaultPasskeyProfile"] = profile_ids[0]
    targets = draw(st.lists(st.sampled_from(["all_users", GROUP_A, GROUP_B]), min_size=1, max_size=3, unique=True))
    raw["includeTargets"] = [raw_target(t, profile_ids[:1], draw(st.booleans())) for t in targets]
    raw["excludeTargets"] = [{"targetType": "group", "id": g}
                             for g in draw(st.lists(st.sampled_from([GROUP_B, BREAK_GLASS]), unique=True))]
    return raw


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """A valid desired-state document."""
    enforced = draw(st.booleans())
    mode = draw(st.sampled_from(["allow", "block"]))
    keep = draw(st.lists(aaguid, unique=True, max_size=4))
    if enforced and mode == "allow":
        keep = list(dict.fromkeys([*AUTHENTICATOR_AAGUIDS, *keep]))
    removable = [a for a in POOL if a not in keep and not (enforced and mode == "allow" and a in AUTHENTICATOR_AAGUIDS)]
    remove = draw(st.lists(st.sampled_from(removable), unique=True, max_size=3)) if removable else []
    include = draw(st.sampled_from([["all_users"], [GROUP_A], [GROUP_A, GROUP_B]]))
    doc: dict[str, Any] = {
        "passkeyMethod": {
            "state": draw(st.sampled_from(["enabled", "disabled"])),
            "includeTargets": include,
            "excludeTargets": draw(st.lists(st.sampled_from([GROUP_B, BREAK_GLASS]), unique=True)),
            "selfServiceRegistration": draw(st.booleans()),
            "attestationEnforced": draw(st.booleans()),
            "keyRestrictions": {"enforced": enforced, "enforcementType": mode,
                                "aaguids": [a.upper() if draw(st.booleans()) else a for a in keep], "remove": remove},
        },
        "authenticationStrength": {"displayName": "Authenticator passkey",
                                   "allowedAaguids": draw(st.lists(aaguid, min_size=1, max_size=4, unique=True))},
    }
    if draw(st.booleans()):
        doc["authenticationStrength"]["description"] = draw(st.sampled_from(["", "Managed", "Other"]))
    if draw(st.booleans()):
        doc["passkeyMethod"]["passkeyProfile"] = draw(st.sampled_from(["Profile 0", "Profile 1", "profile 2"]))
    if draw(st.booleans()):
        doc["conditionalAccess"] = {
            "displayName": "Require Authenticator passkey",
            "state": draw(st.sampled_from(["enabled", "disabled", "enabledForReportingButNotEnforced"])),
            "includeUsers": draw(st.sampled_from([["All"], []])),
            "includeGroups": [GROUP_A],
            "excludeUsers": draw(st.lists(st.sampled_from([BREAK_GLASS]), max_size=1)),
            "includeApplications": draw(st.sampled_from([["All"], [APP]])),
        }
    return doc


@st.composite
def raw_strengths(draw: st.DrawFn) -> list[dict[str, Any]]:
    """The strength list: built-ins, a multi-method custom, and maybe ours in some state."""
    out = copy.deepcopy(OTHER_STRENGTHS)
    if draw(st.booleans()):
        combos = draw(st.sampled_from([["fido2"], ["fido2", "password,sms"], ["password,sms"]]))
        configured = draw(st.booleans())
        out.append(strength(combos=combos, description=draw(st.sampled_from(["Managed", "", "Other"])),
                            aaguids=draw(st.lists(any_case_aaguid, max_size=4)) if configured else None))
    return out


@st.composite
def raw_cas(draw: st.DrawFn) -> list[dict[str, Any]]:
    """The CA policy list: maybe ours, in some state."""
    out = [ca_policy("ca-other", "Someone else's", strength_id="x")]
    if draw(st.booleans()):
        out.append(ca_policy(state=draw(st.sampled_from(["enabled", "disabled", "enabledForReportingButNotEnforced"])),
                             strength_id=draw(st.sampled_from(["s-ours", "other", None])),
                             include_users=draw(st.sampled_from([["All"], []])),
                             include_groups=draw(st.sampled_from([[GROUP_A], [GROUP_A.upper()], []])),
                             exclude_users=draw(st.sampled_from([[BREAK_GLASS], []])),
                             built_in=draw(st.sampled_from([[], ["mfa"]]))))
    return out


def plan_of(state: DesiredState, fido2: dict[str, Any], strengths: list[dict[str, Any]],
            cas: list[dict[str, Any]]) -> Plan:
    """build_plan with every referenced group valid."""
    return build_plan(state, fido2, strengths, cas, groups_for(state))


def fido2_body(plan: Plan) -> dict[str, Any] | None:
    """The patch_fido2 body, if any."""
    bodies = [w["body"] for w in plan.writes if w["op"] == "patch_fido2"]
    assert len(bodies) <= 1
    return bodies[0] if bodies else None


def keys(values: list[str]) -> set[str]:
    """Case-insensitive AAGUID keys."""
    return {v.lower() for v in values}


# --- properties ----------------------------------------------------------------------------------------
@SETTINGS
@given(st.lists(st.text(max_size=5) | any_case_aaguid, max_size=8), st.lists(any_case_aaguid, max_size=5),
       st.lists(any_case_aaguid, max_size=5))
def test_merge_never_drops_what_was_not_removed(current: list[str], wanted: list[str], remove: list[str]) -> None:
    """merge_aaguids keeps every current and wanted entry not removed, drops every removed one, no duplicates."""
    merged = merge_aaguids(current, wanted, remove)
    gone = keys(remove)
    assert keys(merged) == (keys(current) | keys(wanted)) - gone
    assert len(merged) == len(keys(merged))
    survivors = [c.lower() for c in current if c.lower() not in gone]
    assert [m.lower() for m in merged][:len(dict.fromkeys(survivors))] == list(dict.fromkeys(survivors))


@SETTINGS
@given(documents(), raw_fido2(), raw_strengths(), raw_cas())
def test_plan_never_drops_an_aaguid_not_explicitly_removed(doc: dict[str, Any], fido2: dict[str, Any],
                                                           strengths: list[dict[str, Any]],
                                                           cas: list[dict[str, Any]]) -> None:
    """Within the same kind of list, the new key restrictions keep every current AAGUID not in remove."""
    state = validate_document(doc)
    plan = plan_of(state, fido2, strengths, cas)
    if plan.method_before is None or plan.method_after is None:
        return  # the managed profile could not be found: nothing is written to the method
    spec = state.passkey_method.key_restrictions
    if plan.method_before["enforcementType"] == spec.enforcement_type:
        expected = keys(plan.method_before["aaGuids"]) - keys(list(spec.remove))
        assert expected <= keys(plan.method_after["aaGuids"])
        body = fido2_body(plan)
        if body is not None:
            view = read_fido2(fido2, state.passkey_method.passkey_profile)
            sent = (body["passkeyProfiles"][view.profile_index].get("keyRestrictions") if "passkeyProfiles" in body
                    else body.get("keyRestrictions"))
            if sent is not None:
                assert expected <= keys(sent["aaGuids"])
            elif "passkeyProfiles" in body:
                assert not expected  # a profile sent without restrictions must not have had any to keep


@SETTINGS
@given(documents(), raw_fido2(), raw_strengths(), raw_cas())
def test_writes_exist_exactly_when_changes_do(doc: dict[str, Any], fido2: dict[str, Any],
                                             strengths: list[dict[str, Any]], cas: list[dict[str, Any]]) -> None:
    """An empty diff has no writes, and every write comes with at least one change row."""
    plan = plan_of(validate_document(doc), fido2, strengths, cas)
    assert bool(plan.changes) == bool(plan.writes)
    assert plan.empty == (not plan.writes)


@SETTINGS
@given(documents(), raw_fido2(), raw_strengths(), raw_cas())
def test_planning_after_apply_is_empty(doc: dict[str, Any], fido2: dict[str, Any],
                                       strengths: list[dict[str, Any]], cas: list[dict[str, Any]]) -> None:
    """Applying the writes (replace-collection PATCH semantics) and planning again gives an empty plan."""
    state = validate_document(doc)
    plan = plan_of(state, fido2, strengths, cas)
    after = simulate_apply(fido2, strengths, cas, plan.writes)
    again = plan_of(state, *after)
    assert again.empty, (again.changes, again.writes)
    assert not again.changes
    assert not again.narrowing


@SETTINGS
@given(documents(), raw_fido2(), raw_strengths(), raw_cas())
def test_patch_body_is_minimal_and_fresh(doc: dict[str, Any], fido2: dict[str, Any],
                                         strengths: list[dict[str, Any]], cas: list[dict[str, Any]]) -> None:
    """The FIDO2 body carries @odata.type, known properties only, each one different from what was read."""
    plan = plan_of(validate_document(doc), fido2, strengths, cas)
    body = fido2_body(plan)
    if body is None:
        return
    assert body["@odata.type"] == FIDO2_TYPE
    assert set(body) <= FIDO2_FIELDS and len(body) > 1
    read = strip_volatile(fido2)
    for key, value in body.items():
        if key != "@odata.type":
            assert value != read.get(key), key
    assert "@odata.context" not in json.dumps(body)


@SETTINGS
@given(documents(), raw_fido2(), raw_strengths(), raw_cas())
def test_passkey_types_and_other_profiles_survive(doc: dict[str, Any], fido2: dict[str, Any],
                                                  strengths: list[dict[str, Any]], cas: list[dict[str, Any]]) -> None:
    """Every profile sent back keeps passkeyTypes and every unmanaged field exactly as read."""
    state = validate_document(doc)
    body = fido2_body(plan_of(state, fido2, strengths, cas))
    if body is None or "passkeyProfiles" not in body:
        return
    managed = read_fido2(fido2, state.passkey_method.passkey_profile).profile_index
    assert len(body["passkeyProfiles"]) == len(fido2["passkeyProfiles"])
    for i, (sent, read) in enumerate(zip(body["passkeyProfiles"], fido2["passkeyProfiles"], strict=True)):
        assert sent["passkeyTypes"] == read["passkeyTypes"]
        if i == managed:
            assert {k: v for k, v in sent.items() if k not in ("attestationEnforcement", "keyRestrictions")} == {
                k: v for k, v in read.items() if k not in ("attestationEnforcement", "keyRestrictions")}
        else:
            assert sent == read


@SETTINGS
@given(documents(), raw_fido2(), raw_strengths(), raw_cas(),
       st.dictionaries(st.sampled_from(["u-1", "u-2", "u-3"]),
                       st.lists(st.builds(lambda a, n: {"id": f"m-{n}", "aaGuid": a, "model": "m"},
                                          any_case_aaguid, st.integers(0, 99)), max_size=3), max_size=3))
def test_nobody_is_locked_out_silently(doc: dict[str, Any], fido2: dict[str, Any], strengths: list[dict[str, Any]],
                                       cas: list[dict[str, Any]], passkeys: dict[str, list[dict[str, Any]]]) -> None:
    """Lockout rows are exactly the keys usable before and not after, and only appear when the plan narrows."""
    plan = plan_of(validate_document(doc), fido2, strengths, cas)
    rows = lockout_impact(plan, passkeys, {})
    if rows:
        assert plan.needs_lockout_evaluation and plan.requires_acceptance
    method_rows = {(r.user_id, r.passkey_id) for r in rows if r.scope == "method"}
    if plan.method_before is not None and plan.method_after is not None:
        expected = {(u, k["id"]) for u, ks in passkeys.items() for k in ks
                    if aaguid_allowed(plan.method_before, k["aaGuid"])
                    and not aaguid_allowed(plan.method_after, k["aaGuid"])}
        assert method_rows == expected


@SETTINGS
@given(documents(), raw_fido2(), raw_strengths(), raw_cas())
def test_plans_round_trip_and_render(doc: dict[str, Any], fido2: dict[str, Any], strengths: list[dict[str, Any]],
                                     cas: list[dict[str, Any]]) -> None:
    """Every plan survives JSON storage unchanged and renders as text and Markdown."""
    plan = plan_of(validate_document(doc), fido2, strengths, cas)
    assert plan_from_json(json.loads(json.dumps(plan_to_json(plan)))) == plan
    assert render_plan_table(plan).endswith("\n")
    assert plan_to_markdown(plan).startswith("# Passkey Guard plan")
