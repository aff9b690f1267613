"""Builders for raw Graph JSON and desired-state documents, plans the tests share, and a pure simulation of
applying writes.

Shared by the policy tests (imported by module name; tests/policy has no package __init__).
"""
from __future__ import annotations

import copy
import itertools
from typing import Any

from shared.errors import InputError
from shared.policy.aaguids import AUTHENTICATOR_ANDROID, AUTHENTICATOR_IOS
from shared.policy.document import DesiredState, validate_document
from shared.policy.lockout import attach_lockout
from shared.policy.plan import apply_patch_locally, build_plan, fill_strength_id
from shared.policy.plan_model import STRENGTH_ID_PLACEHOLDER, Plan

ANDROID = AUTHENTICATOR_ANDROID
IOS = AUTHENTICATOR_IOS
YUBIKEY = "cb69481e-8ff7-4039-93ec-0a2729a154a8"   # YubiKey 5 (not in the shipped names list)
FEITIAN = "ee882879-721c-4913-9775-3dfcce97072a"
ONEPASSWORD = "bada5566-a7aa-401f-bd96-45619a55120d"  # in the shipped names list
GROUP_A = "11111111-1111-1111-1111-111111111111"
GROUP_B = "22222222-2222-2222-2222-222222222222"
GROUP_M365 = "33333333-3333-3333-3333-333333333333"
BREAK_GLASS = "44444444-4444-4444-4444-444444444444"
APP = "55555555-5555-5555-5555-555555555555"
DEFAULT_PROFILE_ID = "00000000-0000-0000-0000-000000000001"
FIDO2_TYPE = "#microsoft.graph.fido2AuthenticationMethodConfiguration"


def doc(**overrides: Any) -> dict[str, Any]:
    """A valid desired-state document; keyword overrides replace top-level sections (None deletes)."""
    base: dict[str, Any] = {
        "passkeyMethod": {
            "state": "enabled",
            "includeTargets": ["all_users"],
            "excludeTargets": [],
            "selfServiceRegistration": True,
            "attestationEnforced": False,
            "keyRestrictions": {"enforced": True, "enforcementType": "allow", "aaguids": [ANDROID, IOS],
                                "remove": []},
        },
        "authenticationStrength": {"displayName": "Authenticator passkey", "description": "Managed",
                                   "allowedAaguids": [ANDROID, IOS]},
    }
    for key, value in overrides.items():
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value
    return base


def method(**fields: Any) -> dict[str, Any]:
    """A valid passkeyMethod section with `fields` replaced."""
    m = copy.deepcopy(doc()["passkeyMethod"])
    m.update(fields)
    return m


def restrictions(**fields: Any) -> dict[str, Any]:
    """A keyRestrictions section with `fields` replaced."""
    kr = copy.deepcopy(doc()["passkeyMethod"]["keyRestrictions"])
    kr.update(fields)
    return kr


def ca_section(**fields: Any) -> dict[str, Any]:
    """A valid conditionalAccess section with `fields` replaced."""
    ca: dict[str, Any] = {"displayName": "Require Authenticator passkey", "state": "enabledForReportingButNotEnforced",
                          "includeUsers": ["All"], "includeGroups": [], "excludeUsers": [BREAK_GLASS],
                          "excludeGroups": [], "includeApplications": [APP]}
    ca.update(fields)
    return ca


def desired(**overrides: Any) -> DesiredState:
    """A validated DesiredState from `doc(**overrides)`."""
    return validate_document(doc(**overrides))


def legacy_fido2(*, aaguids: list[str] | None = None, enforced: bool = True, mode: str = "allow",
                 state: str = "enabled", attestation: bool = False, self_service: bool = True,
                 include: list[dict[str, Any]] | None = None, exclude: list[dict[str, Any]] | None = None
                 ) -> dict[str, Any]:
    """A raw legacy-shape GET of the fido2 configuration (with the read-only annotations Graph adds)."""
    return {
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#authenticationMethodConfigurations/$entity",
        "@odata.type": FIDO2_TYPE, "id": "Fido2", "state": state,
        "isSelfServiceRegistrationAllowed": self_service, "isAttestationEnforced": attestation,
        "keyRestrictions": {"isEnforced": enforced, "enforcementType": mode,
                            "aaGuids": list(aaguids if aaguids is not None else [ANDROID, IOS])},
        "includeTargets": include if include is not None else [
            {"targetType": "group", "id": "all_users", "isRegistrationRequired": False}],
        "excludeTargets": exclude if exclude is not None else [],
    }


def profile(pid: str = DEFAULT_PROFILE_ID, name: str = "Default passkey profile", *,
            passkey_types: str = "deviceBound,synced", attestation: str = "disabled",
            aaguids: list[str] | None = None, enforced: bool = True, mode: str = "allow") -> dict[str, Any]:
    """A raw passkey profile."""
    return {"id": pid, "name": name, "passkeyTypes": passkey_types, "attestationEnforcement": attestation,
            "keyRestrictions": {"isEnforced": enforced, "enforcementType": mode,
                                "aaGuids": list(aaguids if aaguids is not None else [ANDROID, IOS])}}


def profiles_fido2(profiles: list[dict[str, Any]] | None = None, *, default: str = DEFAULT_PROFILE_ID,
                   state: str = "enabled", self_service: bool = True,
                   include: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A raw profiles-shape GET (the deprecated top-level fields still present, as after migration)."""
    raw = legacy_fido2(state=state, self_service=self_service, aaguids=[YUBIKEY], attestation=True)
    raw["defaultPasskeyProfile"] = default
    raw["passkeyProfiles"] = profiles if profiles is not None else [profile()]
    raw["includeTargets"] = include if include is not None else [
        {"targetType": "group", "id": "all_users", "isRegistrationRequired": False,
         "allowedPasskeyProfiles": [default]}]
    return raw


def security_group(gid: str, name: str = "Passkey pilot") -> dict[str, Any]:
    """A raw security group."""
    return {"id": gid, "displayName": name, "securityEnabled": True, "groupTypes": []}


def m365_group(gid: str, name: str = "Team site") -> dict[str, Any]:
    """A raw Microsoft 365 (Unified) group."""
    return {"id": gid, "displayName": name, "securityEnabled": False, "groupTypes": ["Unified"]}


def strength(sid: str = "s-ours", name: str = "Authenticator passkey", *, combos: list[str] | None = None,
             aaguids: list[str] | None = None, description: str = "Managed", config_id: str = "c-1",
             policy_type: str = "custom") -> dict[str, Any]:
    """A raw authentication strength with its combination configurations attached."""
    raw: dict[str, Any] = {"id": sid, "displayName": name, "description": description, "policyType": policy_type,
                           "requirementsSatisfied": "mfa", "allowedCombinations": combos or ["fido2"],
                           "combinationConfigurations@odata.context": "https://example.invalid/$metadata#x",
                           "combinationConfigurations": []}
    if aaguids is not None:
        raw["combinationConfigurations"] = [{
            "@odata.type": "#microsoft.graph.fido2CombinationConfiguration", "id": config_id,
            "appliesToCombinations": ["fido2"], "allowedAAGUIDs": list(aaguids)}]
    return raw


#: Other strengths a real tenant lists: built-ins and a multi-method custom one.
OTHER_STRENGTHS: list[dict[str, Any]] = [
    {"id": "00000000-0000-0000-0000-000000000002", "displayName": "Multifactor authentication",
     "policyType": "builtIn", "allowedCombinations": ["windowsHelloForBusiness", "fido2", "password,sms",
                                                      "password,microsoftAuthenticatorPush"]},
    {"id": "00000000-0000-0000-0000-000000000004", "displayName": "Phishing-resistant MFA", "policyType": "builtIn",
     "allowedCombinations": ["windowsHelloForBusiness", "fido2", "x509CertificateMultiFactor"]},
    {"id": "s-legacy", "displayName": "Password and SMS", "policyType": "custom",
     "allowedCombinations": ["password,sms", "password,voice"], "combinationConfigurations": []},
]


def ca_policy(pid: str = "ca-1", name: str = "Require Authenticator passkey", *, state: str =
              "enabledForReportingButNotEnforced", strength_id: str | None = "s-ours",
              include_users: list[str] | None = None, exclude_users: list[str] | None = None,
              include_groups: list[str] | None = None, exclude_groups: list[str] | None = None,
              apps: list[str] | None = None, built_in: list[str] | None = None) -> dict[str, Any]:
    """A raw Conditional Access policy as GET returns it (nulls for unset conditions)."""
    grant: dict[str, Any] = {"operator": "OR", "builtInControls": built_in or [], "customAuthenticationFactors": [],
                             "termsOfUse": []}
    if strength_id is not None:
        grant["authenticationStrength@odata.context"] = "https://example.invalid/$metadata#x"
        grant["authenticationStrength"] = {"id": strength_id, "displayName": "Authenticator passkey"}
    return {
        "id": pid, "displayName": name, "state": state, "createdDateTime": "2026-01-01T00:00:00Z",
        "conditions": {
            "clientAppTypes": ["all"], "platforms": None, "locations": None,
            "applications": {"includeApplications": apps if apps is not None else [APP],
                             "excludeApplications": [], "includeUserActions": []},
            "users": {"includeUsers": include_users if include_users is not None else ["All"],
                      "excludeUsers": exclude_users if exclude_users is not None else [BREAK_GLASS],
                      "includeGroups": include_groups or [], "excludeGroups": exclude_groups or [],
                      "includeRoles": [], "excludeRoles": []},
        },
        "grantControls": grant,
        "sessionControls": None,
    }


def simulate_apply(fido2: dict[str, Any], strengths: list[dict[str, Any]], cas: list[dict[str, Any]],
                   writes: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """Apply a plan's writes to copies of the raw state, the way Graph would (replace-collection PATCH)."""
    fido2 = copy.deepcopy(fido2)
    strengths = copy.deepcopy(strengths)
    cas = copy.deepcopy(cas)
    ids = itertools.count(1)
    pending = [copy.deepcopy(w) for w in writes]
    while pending:
        w = pending.pop(0)
        op, body = w["op"], w["body"]
        assert STRENGTH_ID_PLACEHOLDER != w.get("strengthId") or op == "create_combination_configuration"
        if op == "patch_fido2":
            fido2 = apply_patch_locally(fido2, body)
        elif op == "create_strength":
            new_id = f"s-new-{next(ids)}"
            strengths.append({"id": new_id, "policyType": "custom", "combinationConfigurations": [], **body})
            pending = fill_strength_id(pending, new_id)
        elif op in ("update_strength", "update_strength_combinations", "create_combination_configuration",
                    "update_combination_configuration"):
            sid = w["strengthId"]
            target = next(s for s in strengths if s["id"] == sid)
            if op == "update_strength":
                target.update(body)
            elif op == "update_strength_combinations":
                target["allowedCombinations"] = list(body["allowedCombinations"])
            elif op == "create_combination_configuration":
                target.setdefault("combinationConfigurations", []).append({"id": f"c-new-{next(ids)}", **body})
            else:
                cid = w["configurationId"]
                config = next(c for c in target["combinationConfigurations"] if c["id"] == cid)
                config.update(body)
        elif op == "create_ca_policy":
            cas.append({"id": f"ca-new-{next(ids)}", **body})
        elif op == "update_ca_policy":
            cid = w["policyId"]
            target = next(p for p in cas if p["id"] == cid)
            target.update(copy.deepcopy(body))
        else:  # pragma: no cover - a new op the simulation does not know is a test bug
            raise AssertionError(op)
    return fido2, strengths, cas


def groups_for(state: DesiredState) -> dict[str, dict[str, Any] | None]:
    """Every group the document references, looked up as a valid security group."""
    return {gid: security_group(gid) for gid in state.group_ids()}


def detail_of(exc: InputError) -> list[dict[str, str]]:
    """The `{field, problem}` list an InputError carries (asserting its shape)."""
    detail = exc.detail
    assert isinstance(detail, list) and detail
    return detail


# --- plans for the tests ---------------------------------------------------------------------------------
#: Our strength, accepting the two Authenticator AAGUIDs.
OURS = [strength(aaguids=[ANDROID, IOS])]


def plan_for(state: Any = None, fido2: dict[str, Any] | None = None, strengths: Any = None, cas: Any = None,
             groups: dict[str, Any] | None = None) -> Plan:
    """build_plan with matching defaults for whatever is not given."""
    state = state if state is not None else desired()
    return build_plan(state, fido2 if fido2 is not None else legacy_fido2(),
                      strengths if strengths is not None else OURS, cas if cas is not None else [],
                      groups if groups is not None else {g: security_group(g) for g in state.group_ids()})


def writes_of(plan: Plan, op: str) -> list[dict[str, Any]]:
    """The plan's writes with this op."""
    return [w for w in plan.writes if w["op"] == op]


def fido2_body(plan: Plan) -> dict[str, Any]:
    """The single patch_fido2 body."""
    (write,) = writes_of(plan, "patch_fido2")
    assert write["target"] == "fido2" and set(write) == {"op", "target", "body"}
    return write["body"]


def codes(issues: list[Any]) -> list[str]:
    """Issue codes."""
    return [i.code for i in issues]


def rich_plan() -> Plan:
    """A plan with changes, warnings, narrowing and evaluated lockout rows."""
    state = desired(passkeyMethod=method(keyRestrictions=restrictions(remove=[YUBIKEY])),
                    aaguidNames={YUBIKEY: "YubiKey | 5"}, conditionalAccess=ca_section(excludeUsers=[]))
    plan = build_plan(state, legacy_fido2(aaguids=[YUBIKEY, ONEPASSWORD], mode="allow"), [], [], {})
    return attach_lockout(plan, {"u-1": [{"id": "m-1", "aaGuid": YUBIKEY, "model": "YubiKey 5"}]},
                          {"u-1": "ada@contoso.com"})
