"""FIDO2 method configuration, authentication strengths (with FIDO2 combination configurations) and
Conditional Access policies.

Choices where Graph's documentation is silent, each the stricter reading:
- FIDO2 PATCH replaces `keyRestrictions`, `passkeyProfiles`, `includeTargets` and `excludeTargets`
  whole (fields missing from a sent `keyRestrictions` take their defaults). With passkey profiles, the
  legacy top-level `keyRestrictions`/`isAttestationEnforced` mirror the default profile, and a PATCH of
  them does what knob `legacy_patch_in_profiles_tenant` says (`graphsim.passkey_profiles`).
  A profile sent without `passkeyTypes` gets `deviceBound`: this is what a PATCH built from the SDK's
  `passkey_types=[…]` list does (the SDK drops the list), so that trap shows as lost data.
- Strength GET and list return `combinationConfigurations` inline, with its `@odata.context`, as
  Graph's own responses do; the `…/combinationConfigurations` sub-path serves them too.
  One FIDO2 combination configuration per strength (a second POST is a 400).
- A CA policy GET returns `grantControls.authenticationStrength` expanded to the whole strength.
"""
from __future__ import annotations

import copy
import uuid
from typing import TYPE_CHECKING, Any

from graphsim.errors import GraphApiError, bad_request
from graphsim.odata import compile_filter, parse_filter, parse_select
from graphsim.passkey_profiles import legacy_patch
from graphsim.routing import SimRequest, SimResponse
from graphsim.store import is_guid, now_iso

if TYPE_CHECKING:
    from graphsim.app import SimServer

FIDO2_TYPE = "#microsoft.graph.fido2AuthenticationMethodConfiguration"
FIDO2_COMBO_TYPE = "#microsoft.graph.fido2CombinationConfiguration"
METHOD_MODES = frozenset(
    "password voice hardwareOath softwareOath sms fido2 windowsHelloForBusiness microsoftAuthenticatorPush "
    "deviceBasedPush temporaryAccessPassOneTime temporaryAccessPassMultiUse email x509CertificateSingleFactor "
    "x509CertificateMultiFactor federatedSingleFactor federatedMultiFactor unknownFutureValue qrCodePin".split())
MAX_CUSTOM_STRENGTHS = 15
STRENGTH_PROPERTIES = ("id", "createdDateTime", "modifiedDateTime", "displayName", "description", "policyType",
                       "requirementsSatisfied", "allowedCombinations", "combinationConfigurations")
CA_STATES = ("enabled", "disabled", "enabledForReportingButNotEnforced")
CA_BUILTIN_CONTROLS = frozenset("block mfa compliantDevice domainJoinedDevice approvedApplication "
                                "compliantApplication passwordChange unknownFutureValue".split())


def _odata_type(body: dict[str, Any], expected: str) -> None:
    value = body.get("@odata.type")
    if value is None:
        raise bad_request(f"The request body must carry '@odata.type' ('{expected}').")
    if str(value).lower() != expected.lower():
        raise bad_request(f"Invalid '@odata.type' '{value}': expected '{expected}'.")


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise bad_request(f"Cannot convert the literal '{value}' to the expected type 'Edm.Boolean' ({name}).")
    return value


def _enum(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise bad_request(f"Requested value '{value}' was not found for '{name}'; expected one of {list(allowed)}.")
    return str(value)


def _guid_list(name: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(is_guid(v) for v in value):
        raise bad_request(f"'{name}' must be a list of GUIDs.")
    return list(value)


def _guid(name: str, value: Any) -> str:
    if not is_guid(value):
        raise bad_request(f"'{name}' must be a GUID.")
    return str(value)


def _only(name: str, obj: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise bad_request(f"'{name}' must be an object.")
    unknown = [k for k in obj if k not in allowed and not k.startswith("@odata.")]
    if unknown:
        raise bad_request(f"Property '{unknown[0]}' does not exist on '{name}'.")
    return obj


# ------------------------------------------------------------------ FIDO2 method configuration
def _key_restrictions(value: Any) -> dict[str, Any]:
    kr = _only("keyRestrictions", value, {"isEnforced", "enforcementType", "aaGuids"})
    return {"isEnforced": _bool("isEnforced", kr.get("isEnforced", False)),
            "enforcementType": _enum("enforcementType", kr.get("enforcementType", "allow"), ("allow", "block")),
            "aaGuids": _guid_list("aaGuids", kr.get("aaGuids", []))}


def _passkey_types(value: Any) -> str:
    if not isinstance(value, str):
        raise bad_request("passkeyTypes must be a comma-separated string of deviceBound, synced.")
    parts = [p.strip() for p in value.split(",")]
    if not parts or any(p not in ("deviceBound", "synced") for p in parts) or len(set(parts)) != len(parts):
        raise bad_request(f"Requested value '{value}' was not found for 'passkeyTypes'.")
    return ",".join(p for p in ("deviceBound", "synced") if p in parts)


def _profiles(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise bad_request("passkeyProfiles must be a list.")
    out, seen = [], set()
    for raw in value:
        prof = _only("passkeyProfile", raw, {"id", "name", "passkeyTypes", "attestationEnforcement",
                                              "keyRestrictions"})
        if not is_guid(prof.get("id")):
            raise bad_request("Each passkey profile needs a GUID 'id'.")
        if prof["id"].lower() in seen:
            raise bad_request(f"Duplicate passkey profile id {prof['id']}.")
        seen.add(prof["id"].lower())
        name = prof.get("name")
        if not isinstance(name, str) or not name.strip():
            raise bad_request("Each passkey profile needs a 'name'.")
        out.append({"id": prof["id"], "name": name,
                    "passkeyTypes": _passkey_types(prof.get("passkeyTypes", "deviceBound")),
                    "attestationEnforcement": _enum("attestationEnforcement",
                                                    prof.get("attestationEnforcement", "disabled"),
                                                    ("disabled", "registrationOnly")),
                    "keyRestrictions": _key_restrictions(prof.get("keyRestrictions") or {})})
    return out


def _targets(value: Any, include: bool) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise bad_request(f"{'include' if include else 'exclude'}Targets must be a list.")
    out, seen = [], set()
    allowed = {"targetType", "id", "isRegistrationRequired", "allowedPasskeyProfiles"} if include \
        else {"targetType", "id"}
    for raw in value:
        tgt = _only("target", raw, allowed)
        ttype = _enum("targetType", tgt.get("targetType", "group"), ("group", "user"))
        tid = tgt.get("id")
        if not (tid == "all_users" and include) and not is_guid(tid):
            raise bad_request(f"Invalid target id '{tid}'.")
        if str(tid).lower() in seen:
            raise bad_request(f"Duplicate target id '{tid}'.")
        seen.add(str(tid).lower())
        item: dict[str, Any] = {"targetType": ttype, "id": tid}
        if include:
            item["isRegistrationRequired"] = _bool("isRegistrationRequired", tgt.get("isRegistrationRequired", False))
            if "allowedPasskeyProfiles" in tgt:
                item["allowedPasskeyProfiles"] = _guid_list("allowedPasskeyProfiles", tgt["allowedPasskeyProfiles"])
        out.append(item)
    return out


_FIDO2_FIELDS = {
    "state": lambda v: _enum("state", v, ("enabled", "disabled")),
    "isSelfServiceRegistrationAllowed": lambda v: _bool("isSelfServiceRegistrationAllowed", v),
    "isAttestationEnforced": lambda v: _bool("isAttestationEnforced", v),
    "keyRestrictions": _key_restrictions,
    "passkeyProfiles": _profiles,
    "defaultPasskeyProfile": lambda v: _guid("defaultPasskeyProfile", v),
    "includeTargets": lambda v: _targets(v, True),
    "excludeTargets": lambda v: _targets(v, False),
}


def _fido2_segment(params: dict[str, str]) -> None:
    if params["cfg"].lower() != "fido2":
        raise GraphApiError(404, "Request_ResourceNotFound",
                            f"The simulator only has the 'Fido2' configuration, not '{params['cfg']}'.")


def get_fido2_config(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """GET …/authenticationMethodConfigurations/fido2."""
    _fido2_segment(params)
    return SimResponse(200, {"@odata.context": f"{req.base}/$metadata#policies/authenticationMethodsPolicy/"
                                               "authenticationMethodConfigurations/$entity",
                             **copy.deepcopy(sim.store.fido2_config)})


def list_method_configs(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """GET …/authenticationMethodConfigurations (only Fido2 is simulated)."""
    return SimResponse(200, {"@odata.context": f"{req.base}/$metadata#policies/authenticationMethodsPolicy/"
                                               "authenticationMethodConfigurations",
                             "value": [copy.deepcopy(sim.store.fido2_config)]})


def get_methods_policy(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """GET /policies/authenticationMethodsPolicy with the Fido2 configuration inside."""
    return SimResponse(200, {
        "@odata.context": f"{req.base}/$metadata#policies/authenticationMethodsPolicy/$entity",
        "id": "authenticationMethodsPolicy", "displayName": "Authentication Methods Policy",
        "description": "The tenant-wide policy that controls which authentication methods are allowed",
        "policyVersion": "1.5", "policyMigrationState": "migrationComplete",
        "authenticationMethodConfigurations": [copy.deepcopy(sim.store.fido2_config)]})


def patch_fido2_config(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """PATCH …/fido2: partial, typed, collections replaced whole, references checked; 204."""
    _fido2_segment(params)
    body = req.json_object()
    _odata_type(body, FIDO2_TYPE)
    new = copy.deepcopy(sim.store.fido2_config)
    for key, value in body.items():
        if key.startswith("@odata."):
            continue
        if key == "id":
            if str(value).lower() != "fido2":
                raise bad_request(f"The id '{value}' does not match the configuration 'Fido2'.")
            continue
        check = _FIDO2_FIELDS.get(key)
        if check is None:
            raise bad_request(f"Property '{key}' does not exist on type "
                              "'microsoft.graph.fido2AuthenticationMethodConfiguration' or is read-only.")
        new[key] = check(value)
    profile_ids = {p["id"].lower() for p in new.get("passkeyProfiles") or []}
    default = new.get("defaultPasskeyProfile")
    if default is not None and default.lower() not in profile_ids:
        raise bad_request(f"defaultPasskeyProfile '{default}' is not one of the passkeyProfiles.")
    for target in new.get("includeTargets") or []:
        for ref in target.get("allowedPasskeyProfiles") or []:
            if ref.lower() not in profile_ids:
                raise bad_request(f"allowedPasskeyProfiles references unknown passkey profile '{ref}'.")
    legacy_patch(new, body, sim.config.legacy_patch_in_profiles_tenant)
    sim.store.fido2_config = new
    return SimResponse(204)


# ------------------------------------------------------------------ authentication strengths
def _combinations(value: Any) -> list[str]:
    if not isinstance(value, list) or not value:
        raise bad_request("allowedCombinations must be a non-empty list.")
    for combo in value:
        parts = [p.strip() for p in str(combo).split(",")] if isinstance(combo, str) else []
        if not parts or any(p not in METHOD_MODES for p in parts):
            raise bad_request(f"Requested value '{combo}' was not found for 'authenticationMethodModes'.")
    if len({c.replace(" ", "") for c in value}) != len(value):
        raise bad_request("allowedCombinations has duplicates.")
    return list(value)


def _strength(sim: SimServer, key: str) -> dict[str, Any]:
    pol = sim.store.strengths.get(key.lower())
    if pol is None:
        raise GraphApiError(404, "Request_ResourceNotFound",
                            f"Resource '{key}' does not exist or one of its queried reference-property objects "
                            "are not present.")
    return pol


def _custom(pol: dict[str, Any], action: str) -> None:
    if pol["policyType"] != "custom":
        raise bad_request(f"Built-in authentication strength policies cannot be {action}.")


def _strength_view(req: SimRequest, pol: dict[str, Any], select: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in select or STRENGTH_PROPERTIES:
        if key == "combinationConfigurations":
            out["combinationConfigurations@odata.context"] = (
                f"{req.base}/$metadata#policies/authenticationStrengthPolicies('{pol['id']}')/combinationConfigurations")
        out[key] = copy.deepcopy(pol.get(key))
    return out


def _ca_references(sim: SimServer, strength_id: str) -> list[str]:
    return [p["id"] for p in sim.store.ca_policies.values()
            if str(((p.get("grantControls") or {}).get("authenticationStrength") or {}).get("id", "")).lower()
            == strength_id.lower()]


def list_strengths(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """GET /policies/authenticationStrengthPolicies with $filter and $select."""
    select = parse_select(req.query.get("$select"), STRENGTH_PROPERTIES, "microsoft.graph.authenticationStrengthPolicy")
    by_lower = {p.lower(): p for p in STRENGTH_PROPERTIES}

    def resolve(name: str) -> str:
        if name.lower() not in by_lower:
            raise bad_request(f"Could not find a property named '{name}' on type "
                              "'microsoft.graph.authenticationStrengthPolicy'.")
        return by_lower[name.lower()]
    pols = list(sim.store.strengths.values())
    if "$filter" in req.query:
        predicate = compile_filter(parse_filter(req.query["$filter"]), resolve)
        pols = [p for p in pols if predicate(p)]
    return SimResponse(200, {"@odata.context": f"{req.base}/$metadata#policies/authenticationStrengthPolicies",
                             "value": [_strength_view(req, p, select) for p in pols]})


def get_strength(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """GET /policies/authenticationStrengthPolicies/{id}."""
    pol = _strength(sim, params["id"])
    select = parse_select(req.query.get("$select"), STRENGTH_PROPERTIES, "microsoft.graph.authenticationStrengthPolicy")
    return SimResponse(200, {"@odata.context": f"{req.base}/$metadata#policies/authenticationStrengthPolicies/$entity",
                             **_strength_view(req, pol, select)})


def create_strength(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """POST /policies/authenticationStrengthPolicies: a custom strength, 201."""
    body = req.json_object()
    if body.get("@odata.type") not in (None, "#microsoft.graph.authenticationStrengthPolicy"):
        raise bad_request(f"Invalid '@odata.type' '{body['@odata.type']}'.")
    _only("authenticationStrengthPolicy", body, {"displayName", "description", "allowedCombinations", "policyType",
                                                 "requirementsSatisfied"})
    if body.get("policyType", "custom") != "custom":
        raise bad_request("Only custom authentication strength policies can be created.")
    if body.get("requirementsSatisfied", "mfa") != "mfa":
        raise bad_request("requirementsSatisfied is computed by the service.")
    name = body.get("displayName")
    if not isinstance(name, str) or not name.strip():
        raise bad_request("displayName is required.")
    combos = _combinations(body.get("allowedCombinations"))
    if sum(1 for p in sim.store.strengths.values() if p["policyType"] == "custom") >= MAX_CUSTOM_STRENGTHS:
        raise bad_request(f"A tenant can have at most {MAX_CUSTOM_STRENGTHS} custom authentication strengths.")
    stamp = now_iso()
    pol: dict[str, Any] = {
        "id": str(uuid.uuid4()), "createdDateTime": stamp, "modifiedDateTime": stamp, "displayName": name,
           "description": body.get("description"), "policyType": "custom", "requirementsSatisfied": "mfa",
           "allowedCombinations": combos, "combinationConfigurations": []}
    sim.store.strengths[pol["id"]] = pol
    return SimResponse(201, {"@odata.context": f"{req.base}/$metadata#policies/authenticationStrengthPolicies/$entity",
                             **_strength_view(req, pol)})


def patch_strength(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """PATCH …/{id}: displayName and description of a custom strength only; 204."""
    pol = _strength(sim, params["id"])
    _custom(pol, "updated")
    body = req.json_object()
    if "allowedCombinations" in body:
        raise bad_request("Use updateAllowedCombinations to change allowedCombinations.")
    _only("authenticationStrengthPolicy", body, {"displayName", "description"})
    if "displayName" in body and (not isinstance(body["displayName"], str) or not body["displayName"].strip()):
        raise bad_request("displayName cannot be empty.")
    for key in ("displayName", "description"):
        if key in body:
            pol[key] = body[key]
    pol["modifiedDateTime"] = now_iso()
    return SimResponse(204)


def delete_strength(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """DELETE …/{id}: custom and unreferenced only; 204."""
    pol = _strength(sim, params["id"])
    _custom(pol, "deleted")
    refs = _ca_references(sim, pol["id"])
    if refs:
        raise bad_request(f"The authentication strength is referenced by Conditional Access policies: {refs}.")
    del sim.store.strengths[pol["id"].lower()]
    return SimResponse(204)


def update_allowed_combinations(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """POST …/{id}/updateAllowedCombinations: 200 with previous/current combinations and CA references."""
    pol = _strength(sim, params["id"])
    _custom(pol, "updated")
    body = req.json_object()
    _only("updateAllowedCombinations", body, {"allowedCombinations"})
    combos = _combinations(body.get("allowedCombinations"))
    previous = pol["allowedCombinations"]
    pol["allowedCombinations"] = combos
    info = None
    if "fido2" not in combos and pol["combinationConfigurations"]:
        removed = [c["id"] for c in pol["combinationConfigurations"]]
        pol["combinationConfigurations"] = []
        info = f"Removed combination configurations that applied to fido2: {removed}"
    pol["modifiedDateTime"] = now_iso()
    return SimResponse(200, {"@odata.context": f"{req.base}/$metadata#microsoft.graph.updateAllowedCombinationsResult",
                             "additionalInformation": info,
                             "conditionalAccessReferences": _ca_references(sim, pol["id"]),
                             "currentCombinations": list(combos), "previousCombinations": list(previous)})


def strength_usage(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """GET …/{id}/usage: the CA policies that reference the strength, under `mfa` or `none`."""
    pol = _strength(sim, params["id"])
    refs = [_ca_view(sim, req, sim.store.ca_policies[r.lower()]) for r in _ca_references(sim, pol["id"])]
    mfa = pol.get("requirementsSatisfied") == "mfa"
    return SimResponse(200, {"@odata.context": f"{req.base}/$metadata#microsoft.graph.authenticationStrengthUsage",
                             "mfa": refs if mfa else [], "none": [] if mfa else refs})


# ------------------------------------------------------------------ combination configurations
def _combo_config(pol: dict[str, Any], cid: str) -> dict[str, Any]:
    for cfg in pol["combinationConfigurations"]:
        if cfg["id"].lower() == cid.lower():
            return cfg
    raise GraphApiError(404, "Request_ResourceNotFound", f"Combination configuration '{cid}' was not found.")


def _applies(value: Any) -> list[str]:
    if value != ["fido2"]:
        raise bad_request("appliesToCombinations must be exactly [\"fido2\"] for a fido2CombinationConfiguration.")
    return ["fido2"]


def list_combo_configs(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """GET …/{id}/combinationConfigurations."""
    pol = _strength(sim, params["id"])
    return SimResponse(200, {"@odata.context": f"{req.base}/$metadata#policies/authenticationStrengthPolicies"
                                               f"('{pol['id']}')/combinationConfigurations",
                             "value": copy.deepcopy(pol["combinationConfigurations"])})


def get_combo_config(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """GET …/{id}/combinationConfigurations/{configId}."""
    cfg = _combo_config(_strength(sim, params["id"]), params["cid"])
    return SimResponse(200, {"@odata.context": f"{req.base}/$metadata#policies/authenticationStrengthPolicies"
                                               f"('{params['id']}')/combinationConfigurations/$entity",
                             **copy.deepcopy(cfg)})


def create_combo_config(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """POST …/{id}/combinationConfigurations: typed, fido2 only, custom strengths only; 201."""
    pol = _strength(sim, params["id"])
    _custom(pol, "given combination configurations")
    body = req.json_object()
    _odata_type(body, FIDO2_COMBO_TYPE)
    _only("fido2CombinationConfiguration", body, {"appliesToCombinations", "allowedAAGUIDs"})
    applies = _applies(body.get("appliesToCombinations"))
    if "fido2" not in pol["allowedCombinations"]:
        raise bad_request("The strength does not allow the fido2 combination.")
    if pol["combinationConfigurations"]:
        raise bad_request("The strength already has a fido2 combination configuration; update it instead.")
    cfg = {"@odata.type": FIDO2_COMBO_TYPE, "id": str(uuid.uuid4()), "appliesToCombinations": applies,
           "allowedAAGUIDs": _guid_list("allowedAAGUIDs", body.get("allowedAAGUIDs", []))}
    pol["combinationConfigurations"].append(cfg)
    pol["modifiedDateTime"] = now_iso()
    return SimResponse(201, {"@odata.context": f"{req.base}/$metadata#policies/authenticationStrengthPolicies"
                                               f"('{pol['id']}')/combinationConfigurations/$entity",
                             **copy.deepcopy(cfg)})


def patch_combo_config(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """PATCH …/combinationConfigurations/{configId}: typed; allowedAAGUIDs replaced whole; 204."""
    pol = _strength(sim, params["id"])
    _custom(pol, "updated")
    cfg = _combo_config(pol, params["cid"])
    body = req.json_object()
    _odata_type(body, FIDO2_COMBO_TYPE)
    _only("fido2CombinationConfiguration", body, {"appliesToCombinations", "allowedAAGUIDs", "id"})
    if "id" in body and str(body["id"]).lower() != cfg["id"].lower():
        raise bad_request("The id in the body does not match the URL.")
    if "appliesToCombinations" in body:
        cfg["appliesToCombinations"] = _applies(body["appliesToCombinations"])
    if "allowedAAGUIDs" in body:
        cfg["allowedAAGUIDs"] = _guid_list("allowedAAGUIDs", body["allowedAAGUIDs"])
    pol["modifiedDateTime"] = now_iso()
    return SimResponse(204)


def delete_combo_config(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """DELETE …/combinationConfigurations/{configId}: 204."""
    pol = _strength(sim, params["id"])
    _custom(pol, "updated")
    pol["combinationConfigurations"].remove(_combo_config(pol, params["cid"]))
    pol["modifiedDateTime"] = now_iso()
    return SimResponse(204)


# ------------------------------------------------------------------ Conditional Access
def _ca(sim: SimServer, key: str) -> dict[str, Any]:
    pol = sim.store.ca_policies.get(key.lower())
    if pol is None:
        raise GraphApiError(404, "Request_ResourceNotFound", f"Conditional Access policy '{key}' was not found.")
    return pol


def _ca_view(sim: SimServer, req: SimRequest, pol: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(pol)
    grant = out.get("grantControls")
    if isinstance(grant, dict):
        ref = grant.get("authenticationStrength")
        grant["authenticationStrength@odata.context"] = (
            f"{req.base}/$metadata#identity/conditionalAccess/policies('{pol['id']}')/grantControls/"
            "authenticationStrength/$entity")
        if isinstance(ref, dict) and ref.get("id"):
            strength = sim.store.strengths.get(str(ref["id"]).lower())
            grant["authenticationStrength"] = _strength_view(req, strength) if strength else ref
            grant["authenticationStrength"].pop("combinationConfigurations@odata.context", None)
        else:
            grant["authenticationStrength"] = None
    return out


def _validate_ca(sim: SimServer, pol: dict[str, Any]) -> None:
    if not isinstance(pol.get("displayName"), str) or not pol["displayName"].strip():
        raise bad_request("displayName is required.")
    _enum("state", pol.get("state"), CA_STATES)
    cond = pol.get("conditions")
    if not isinstance(cond, dict):
        raise bad_request("conditions is required.")
    apps, users = cond.get("applications"), cond.get("users")
    if not isinstance(apps, dict) or not any(apps.get(k) for k in (
            "includeApplications", "includeUserActions", "includeAuthenticationContextClassReferences")):
        raise bad_request("conditions.applications needs an application, user action or authentication context.")
    if not isinstance(users, dict) or not any(users.get(k) for k in (
            "includeUsers", "includeGroups", "includeRoles", "includeGuestsOrExternalUsers")):
        raise bad_request("conditions.users needs users, groups, roles or guests to include.")
    grant, session = pol.get("grantControls"), pol.get("sessionControls")
    if not grant and not session:
        raise bad_request("A policy needs grantControls or sessionControls.")
    if grant:
        if not isinstance(grant, dict):
            raise bad_request("grantControls must be an object.")
        _enum("grantControls.operator", grant.get("operator"), ("AND", "OR"))
        builtin = grant.get("builtInControls") or []
        if any(c not in CA_BUILTIN_CONTROLS for c in builtin):
            raise bad_request(f"Unknown builtInControls in {builtin}.")
        strength = grant.get("authenticationStrength")
        if strength is not None:
            sid = strength.get("id") if isinstance(strength, dict) else None
            if not sid or str(sid).lower() not in sim.store.strengths:
                raise bad_request(f"The authentication strength '{sid}' does not exist.")
            if "mfa" in builtin:
                raise bad_request("Require multifactor authentication and an authentication strength cannot be "
                                  "combined in one policy.")
        if not builtin and strength is None and not grant.get("customAuthenticationFactors") \
                and not grant.get("termsOfUse"):
            raise bad_request("grantControls needs at least one control.")


def _store_strength_ref(pol: dict[str, Any]) -> None:
    grant = pol.get("grantControls")
    if isinstance(grant, dict):
        grant.pop("authenticationStrength@odata.context", None)
        if isinstance(grant.get("authenticationStrength"), dict):
            grant["authenticationStrength"] = {"id": grant["authenticationStrength"]["id"]}


def list_ca(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """GET /identity/conditionalAccess/policies (optional $filter)."""
    pols = list(sim.store.ca_policies.values())
    if "$filter" in req.query:
        predicate = compile_filter(parse_filter(req.query["$filter"]), lambda name: name)
        pols = [p for p in pols if predicate(p)]
    return SimResponse(200, {"@odata.context": f"{req.base}/$metadata#identity/conditionalAccess/policies",
                             "value": [_ca_view(sim, req, p) for p in pols]})


def get_ca(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """GET /identity/conditionalAccess/policies/{id}."""
    return SimResponse(200, {"@odata.context": f"{req.base}/$metadata#identity/conditionalAccess/policies/$entity",
                             **_ca_view(sim, req, _ca(sim, params["id"]))})


_CA_WRITABLE = {"displayName", "description", "state", "conditions", "grantControls", "sessionControls", "templateId"}


def create_ca(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """POST /identity/conditionalAccess/policies: validated, 201."""
    body = copy.deepcopy(req.json_object())
    _only("conditionalAccessPolicy", body, _CA_WRITABLE)
    pol: dict[str, Any] = {
        "id": str(uuid.uuid4()), "templateId": None, "displayName": None, "createdDateTime": now_iso(),
           "modifiedDateTime": None, "state": None, "sessionControls": None, "conditions": None,
           "grantControls": None}
    pol.update({k: v for k, v in body.items() if not k.startswith("@odata.")})
    _validate_ca(sim, pol)
    _store_strength_ref(pol)
    sim.store.ca_policies[pol["id"]] = pol
    return SimResponse(201, {"@odata.context": f"{req.base}/$metadata#identity/conditionalAccess/policies/$entity",
                             **_ca_view(sim, req, pol)})


def patch_ca(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """PATCH /identity/conditionalAccess/policies/{id}: partial, validated as a whole; 204."""
    pol = _ca(sim, params["id"])
    body = copy.deepcopy(req.json_object())
    _only("conditionalAccessPolicy", body, _CA_WRITABLE | {"id"})
    if "id" in body and str(body["id"]).lower() != pol["id"].lower():
        raise bad_request("The id in the body does not match the URL.")
    new = copy.deepcopy(pol)
    new.update({k: v for k, v in body.items() if not k.startswith("@odata.") and k != "id"})
    _validate_ca(sim, new)
    _store_strength_ref(new)
    new["modifiedDateTime"] = now_iso()
    sim.store.ca_policies[pol["id"].lower()] = new
    return SimResponse(204)


def delete_ca(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """DELETE /identity/conditionalAccess/policies/{id}: 204."""
    pol = _ca(sim, params["id"])
    del sim.store.ca_policies[pol["id"].lower()]
    return SimResponse(204)
