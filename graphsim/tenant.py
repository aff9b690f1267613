"""Loading a tenant file into a `TenantStore`, including synthesized users for scale tests.

The file is JSON in Graph's shapes: `users` (optionally with `authentication.fido2Methods`), `groups`,
`authenticationMethodConfigurations.fido2`, `authenticationStrengthPolicies` (with
`combinationConfigurations`), `conditionalAccessPolicies`, `servicePrincipals` (`id`, `appId`,
`displayName`), optional `tenantId`, `domains` (verified domains; when given, UPNs must use one),
`simulator` (knobs) and `generate` (`{"users": N, "passkeyRatio": r, "domain": d, "seed": s}`) to add N
deterministic users without a huge file. The three built-in authentication strengths are always present,
as in every Entra tenant.
"""
from __future__ import annotations

import copy
import json
import random
import uuid
from pathlib import Path
from typing import Any

from graphsim.errors import GraphApiError
from graphsim.passkey_profiles import mirror_default_profile
from graphsim.store import DEFAULT_TENANT_ID, TenantStore, is_guid

YUBIKEY_5 = "cb69481e-8ff7-4039-93ec-0a2729a154a8"
AUTHENTICATOR_ANDROID = "de1e552d-db1d-4423-a619-566b625cdc84"
AUTHENTICATOR_IOS = "90a3ccdf-635c-4729-a248-9b709135078f"
FEITIAN = "12ded745-4bed-47d4-abaa-e713f51d6393"

BUILTIN_DATE = "2021-12-01T00:00:00Z"
BUILTIN_STRENGTHS: list[dict[str, Any]] = [
    {"id": "00000000-0000-0000-0000-000000000002", "createdDateTime": BUILTIN_DATE, "modifiedDateTime": BUILTIN_DATE,
     "displayName": "Multifactor authentication",
     "description": "Combinations of methods that satisfy strong authentication, such as a password + SMS",
     "policyType": "builtIn", "requirementsSatisfied": "mfa",
     "allowedCombinations": [
         "windowsHelloForBusiness", "fido2", "x509CertificateMultiFactor", "deviceBasedPush",
         "temporaryAccessPassOneTime", "temporaryAccessPassMultiUse", "password,microsoftAuthenticatorPush",
         "password,softwareOath", "password,hardwareOath", "password,sms", "password,voice", "federatedMultiFactor",
         "microsoftAuthenticatorPush,federatedSingleFactor", "softwareOath,federatedSingleFactor",
         "hardwareOath,federatedSingleFactor", "sms,federatedSingleFactor", "voice,federatedSingleFactor"],
     "combinationConfigurations": []},
    {"id": "00000000-0000-0000-0000-000000000003", "createdDateTime": BUILTIN_DATE, "modifiedDateTime": BUILTIN_DATE,
     "displayName": "Passwordless MFA",
     "description": "Passwordless methods that satisfy strong authentication, such as Passwordless sign-in with "
                    "the Microsoft Authenticator",
     "policyType": "builtIn", "requirementsSatisfied": "mfa",
     "allowedCombinations": ["windowsHelloForBusiness", "fido2", "x509CertificateMultiFactor", "deviceBasedPush"],
     "combinationConfigurations": []},
    {"id": "00000000-0000-0000-0000-000000000004", "createdDateTime": BUILTIN_DATE, "modifiedDateTime": BUILTIN_DATE,
     "displayName": "Phishing-resistant MFA",
     "description": "Phishing-resistant, Passwordless methods for the strongest authentication, such as a FIDO2 "
                    "security key",
     "policyType": "builtIn", "requirementsSatisfied": "mfa",
     "allowedCombinations": ["windowsHelloForBusiness", "fido2", "x509CertificateMultiFactor"],
     "combinationConfigurations": []},
]
DEFAULT_FIDO2: dict[str, Any] = {
    "@odata.type": "#microsoft.graph.fido2AuthenticationMethodConfiguration", "id": "Fido2", "state": "disabled",
    "isSelfServiceRegistrationAllowed": True, "isAttestationEnforced": False,
    "keyRestrictions": {"isEnforced": False, "enforcementType": "block", "aaGuids": []},
    "includeTargets": [{"targetType": "group", "id": "all_users", "isRegistrationRequired": False}],
    "excludeTargets": []}
_KEY_MODELS = [(YUBIKEY_5, "YubiKey 5 NFC", "deviceBound"), (AUTHENTICATOR_ANDROID, "Microsoft Authenticator - "
               "Android", "deviceBound"), (AUTHENTICATOR_IOS, "Microsoft Authenticator - iOS", "deviceBound"),
               (FEITIAN, "Feitian ePass FIDO2", "deviceBound")]


def read_tenant_file(path: Path) -> dict[str, Any]:
    """The tenant document from a JSON file."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: the tenant file must hold a JSON object")
    return doc


def load_tenant(doc: dict[str, Any]) -> TenantStore:
    """Build the tenant store from a tenant document (validated; raises ValueError on bad input)."""
    try:
        return _load(doc)
    except GraphApiError as exc:
        raise ValueError(f"invalid tenant file: {exc.message}") from None


def _load(doc: dict[str, Any]) -> TenantStore:
    tenant_id = doc.get("tenantId") or DEFAULT_TENANT_ID
    if not is_guid(tenant_id):
        raise ValueError("tenantId must be a GUID")
    store = TenantStore(tenant_id)
    if doc.get("domains") is not None:
        store.domains = [str(d).lower() for d in doc["domains"]]
    for user in doc.get("users") or []:
        store.add_user(copy.deepcopy(user), record=False)
    if doc.get("generate"):
        generate_users(store, doc["generate"])
    for group in doc.get("groups") or []:
        if not is_guid(group.get("id")):
            raise ValueError(f"group id {group.get('id')!r} is not a GUID")
        store.groups[group["id"].lower()] = {"groupTypes": [], "securityEnabled": False, "mailEnabled": False,
                                             **copy.deepcopy(group)}
    for sp in doc.get("servicePrincipals") or []:
        if not is_guid(sp.get("id")) or not is_guid(sp.get("appId")):
            raise ValueError(f"service principal {sp.get('id')!r} needs a GUID id and appId")
        store.service_principals[sp["id"].lower()] = copy.deepcopy(sp)
    fido2 = (doc.get("authenticationMethodConfigurations") or {}).get("fido2")
    store.fido2_config = copy.deepcopy(fido2) if fido2 else copy.deepcopy(DEFAULT_FIDO2)
    store.fido2_config.setdefault("@odata.type", DEFAULT_FIDO2["@odata.type"])
    store.fido2_config.setdefault("id", "Fido2")
    mirror_default_profile(store.fido2_config)   # a migrated tenant's top level is its default profile's
    for builtin in BUILTIN_STRENGTHS:
        store.strengths[builtin["id"]] = copy.deepcopy(builtin)
    for pol in doc.get("authenticationStrengthPolicies") or []:
        pol = copy.deepcopy(pol)
        pol.setdefault("id", str(uuid.uuid4()))
        pol.setdefault("createdDateTime", BUILTIN_DATE)
        pol.setdefault("modifiedDateTime", pol["createdDateTime"])
        pol.setdefault("combinationConfigurations", [])
        pol.setdefault("requirementsSatisfied", "mfa")
        pol.setdefault("description", None)
        if pol.get("policyType") not in ("builtIn", "custom"):
            raise ValueError(f"strength {pol.get('id')}: policyType must be builtIn or custom")
        store.strengths[pol["id"].lower()] = pol
    for pol in doc.get("conditionalAccessPolicies") or []:
        pol.setdefault("id", str(uuid.uuid4()))
        store.ca_policies[pol["id"].lower()] = copy.deepcopy(pol)
    return store


def generate_users(store: TenantStore, spec: dict[str, Any]) -> None:
    """Add `spec["users"]` deterministic users (same seed, same tenant), a `passkeyRatio` share with a passkey."""
    count = int(spec.get("users", 0))
    ratio = float(spec.get("passkeyRatio", 0.5))
    domain = str(spec.get("domain", "contoso.example"))
    rng = random.Random(spec.get("seed", 1))
    start = len(store.user_order)
    for n in range(start + 1, start + count + 1):
        uid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        props = {"id": uid, "userPrincipalName": f"user{n:06d}@{domain}", "displayName": f"User {n:06d}",
                 "givenName": "User", "surname": f"{n:06d}", "mail": f"user{n:06d}@{domain}",
                 "accountEnabled": True, "createdDateTime": "2024-01-01T00:00:00Z"}
        user = store.add_user(props, record=False)
        if rng.random() < ratio:
            aaguid, model, ptype = _KEY_MODELS[rng.randrange(len(_KEY_MODELS))]
            key_id = uuid.UUID(int=rng.getrandbits(128)).hex
            user.fido2.append({
                "id": f"{key_id}AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA0", "displayName": model,
                "createdDateTime": "2025-01-15T09:00:00Z", "aaGuid": aaguid, "model": model,
                "attestationCertificates": [], "attestationLevel": "attested" if aaguid in (YUBIKEY_5, FEITIAN)
                else "notAttested", "passkeyType": ptype})
