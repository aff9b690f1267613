"""The published peer checks, translated so they run against the simulator (issue 13, "Checks nobody here wrote").

Three tools check the FIDO2/passkey policy Passkey Guard writes; their checks are copied as data in
tests/data/real/ (see its README for commits and paths):

- Maester's EIDSCA AF01-AF06 (`maester-eidsca-fido2.json`),
- CIPP's FIDO2 standards and its own EIDSCA/ZTNA tests (`cipp-fido2-passkey-standards.json`),
- ScubaGear's MS.AAD.3.x (`scubagear-aad-phishing-resistant-mfa.json`).

Each check is translated into a few lines of Python next to the upstream text it stands for, and every
evaluation first asserts that text unchanged in the file: when the file is replaced from a newer upstream
and a check changed, the tests fail instead of evaluating yesterday's meaning. Each tool reads Graph where it
does (endpoint, key form and API version, from the file where the file says), as an app of its own holding
only `Policy.Read.All`.

A verdict is one of Maester's three: "passed", "failed" or "skipped".
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import httpx

from devhost.graph_tokens import unsigned_jwt

DATA = Path(__file__).resolve().parents[1] / "data" / "real"
PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
Json = dict[str, Any]


@cache
def published(name: str) -> Json:
    """One of the peer files in tests/data/real, parsed."""
    return json.loads((DATA / name).read_text(encoding="utf-8"))


def verdict(ok: bool) -> str:
    """A pass/fail verdict."""
    return PASSED if ok else FAILED


# ------------------------------------------------------------------ reading Graph as a peer tool does
@dataclass
class PeerGraph:
    """A peer tool's Graph client: the simulator's root, the tenant, and an app token with the tool's roles."""

    root_url: str
    tenant_id: str
    app_id: str
    roles: tuple[str, ...] = ("Policy.Read.All",)

    async def get(self, version: str, relative_uri: str) -> Json:
        """GET `relative_uri` on API `version`; a collection is followed through its `@odata.nextLink`s."""
        token = unsigned_jwt({"aud": "https://graph.microsoft.com", "tid": self.tenant_id, "appid": self.app_id,
                              "idtyp": "app", "roles": list(self.roles)})
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as client:
            url: str | None = f"{self.root_url}/{version}/{relative_uri}"
            body: Json = {}
            while url:
                resp = await client.get(url)
                assert resp.status_code == 200, f"{self.app_id}: GET {url}: {resp.status_code} {resp.text}"
                page = resp.json()
                if "value" in body:
                    body["value"].extend(page.get("value", []))
                else:
                    body = page
                url = page.get("@odata.nextLink")
            return body


def _graph_url(published_url: str) -> tuple[str, str]:
    """`https://graph.microsoft.com/<version>/<path>` as a peer file writes it: (version, path)."""
    m = re.fullmatch(r"(?:GET )?https://graph\.microsoft\.com/(v1\.0|beta)/(\S+)", published_url)
    assert m, f"not a Graph URL: {published_url!r}"
    return m.group(1), m.group(2)


# ------------------------------------------------------------------ PowerShell semantics the translations need
def ps_string(value: Any) -> str:
    """PowerShell's `[string]` cast of a value read from Graph JSON: $null is '', booleans 'True'/'False'."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def ps_eq(value: Any, text: str) -> bool:
    """`[string]$value -eq 'text'`: PowerShell compares strings without regard to case."""
    return ps_string(value).casefold() == text.casefold()


def ps_contains(values: Iterable[Any] | None, text: str) -> bool:
    """`$values -contains 'text'` for a list of strings (case-insensitive, as -eq)."""
    return any(ps_eq(v, text) for v in values or [])


def ps_notcontains_null(values: list[Any] | None) -> bool:
    """`$values -notcontains $null`: PowerShell treats a scalar left operand as a one-item collection, so a
    missing list ($null) contains $null and the answer is False; an empty list answers True."""
    return values is not None and None not in values


def _key_restrictions(config: Json) -> Json:
    return config.get("keyRestrictions") or {}


# ------------------------------------------------------------------ Maester EIDSCA AF01-AF06
MAESTER = "maester-eidsca-fido2.json"

#: Each check's `rawValue` expression, verbatim, and its translation over Maester's read of the FIDO2
#: configuration (`$result`). Maester casts the raw value to [string] and passes when it `-eq` the
#: `Should -Be` value (Test-MtEidscaAF0n.ps1).
MAESTER_RAW_VALUES: dict[str, tuple[str, Callable[[Json], Any]]] = {
    "EIDSCA.AF01": ("$result.state", lambda r: r.get("state")),
    "EIDSCA.AF02": ("$result.isSelfServiceRegistrationAllowed", lambda r: r.get("isSelfServiceRegistrationAllowed")),
    "EIDSCA.AF03": ("$result.isAttestationEnforced", lambda r: r.get("isAttestationEnforced")),
    "EIDSCA.AF04": ("$result.keyRestrictions.isEnforced", lambda r: _key_restrictions(r).get("isEnforced")),
    "EIDSCA.AF05": ("$result.keyRestrictions.aaGuids -notcontains $null",
                    lambda r: ps_notcontains_null(_key_restrictions(r).get("aaGuids"))),
    "EIDSCA.AF06": ("$result.keyRestrictions.aaGuids -notcontains $null -and "
                    "($result.keyRestrictions.enforcementType -eq 'allow' -or "
                    "$result.keyRestrictions.enforcementType -eq 'block')",
                    lambda r: ps_notcontains_null(_key_restrictions(r).get("aaGuids"))
                    and (ps_eq(_key_restrictions(r).get("enforcementType"), "allow")
                         or ps_eq(_key_restrictions(r).get("enforcementType"), "block"))),
}


@dataclass(frozen=True)
class MaesterRead:
    """What Maester reads: the FIDO2 configuration (`$result`) and `$EnabledAuthMethods`."""

    fido2: Json
    enabled_methods: list[str]


#: The skip conditions, verbatim, and their translation. `$EnabledAuthMethods` is
#: `(Get-MtAuthenticationMethodPolicyConfig -State Enabled).Id`: the ids of the configurations in beta
#: `policies/authenticationMethodsPolicy` whose state -eq 'Enabled'. `Test-MtEidscaAF04` returns AF04's raw
#: value as [string], so `-eq $false` compares it with 'False' (maester365/maester
#: powershell/internal/eidsca/Test-MtEidscaAF04.ps1, powershell/public/Get-MtAuthenticationMethodPolicyConfig.ps1).
MAESTER_SKIPS: dict[str | None, Callable[[MaesterRead], bool]] = {
    None: lambda read: False,
    "$EnabledAuthMethods -notcontains 'Fido2'": lambda read: not ps_contains(read.enabled_methods, "Fido2"),
    "$EnabledAuthMethods -notcontains 'Fido2' -or (Test-MtEidscaAF04) -eq $false":
        lambda read: not ps_contains(read.enabled_methods, "Fido2")
        or ps_eq(MAESTER_RAW_VALUES["EIDSCA.AF04"][1](read.fido2), "False"),
}


def maester_checks() -> dict[str, Json]:
    """Maester's published AF checks by id, each asserted to be the one translated here."""
    checks = {c["id"]: c for c in published(MAESTER)["checks"]}
    assert sorted(checks) == sorted(MAESTER_RAW_VALUES), "Maester's set of EIDSCA.AF checks changed upstream"
    for check_id, (expression, _) in MAESTER_RAW_VALUES.items():
        check = checks[check_id]
        assert check["ps1_rawValue_expression_verbatim"] == expression, f"{check_id} changed upstream"
        assert check["skip_condition_ps1_verbatim"] in MAESTER_SKIPS, f"{check_id}'s skip changed upstream"
    return checks


async def maester_read(graph: PeerGraph) -> MaesterRead:
    """Maester's two requests: the FIDO2 configuration as every AF check names it (beta, `('Fido2')` key form)
    and the beta authentication methods policy behind `$EnabledAuthMethods`."""
    requests = {(c["graph_request"]["api_version"], c["graph_request"]["relative_uri"])
                for c in maester_checks().values()}
    assert len(requests) == 1, f"the AF checks no longer share one request: {requests}"
    ((version, uri),) = requests
    fido2 = await graph.get(version, uri)
    policy = await graph.get("beta", "policies/authenticationMethodsPolicy")
    enabled = [c.get("id") for c in policy.get("authenticationMethodConfigurations", [])
               if ps_eq(c.get("state"), "Enabled")]
    return MaesterRead(fido2=fido2, enabled_methods=[str(i) for i in enabled])


def maester_verdicts(read: MaesterRead) -> dict[str, str]:
    """Maester's verdict on each of EIDSCA AF01-AF06."""
    out: dict[str, str] = {}
    for check_id, check in maester_checks().items():
        if MAESTER_SKIPS[check["skip_condition_ps1_verbatim"]](read):
            out[check_id] = SKIPPED
            continue
        raw = MAESTER_RAW_VALUES[check_id][1](read.fido2)
        out[check_id] = verdict(ps_eq(raw, check["expected_value_pester_Should_Be"]))
    return out


# ------------------------------------------------------------------ CIPP
CIPP = "cipp-fido2-passkey-standards.json"
#: CIPP's tests and the EnableFIDO2 baseline read its cache of the authentication methods policy, which
#: KelvinTegelaar/CIPP-API fills with GET beta policies/authenticationMethodsPolicy
#: (Modules/CIPPDB/Public/DBCache/Set-CIPPDBCacheAuthenticationMethodsPolicy.ps1).
CIPP_POLICY_READ = ("beta", "policies/authenticationMethodsPolicy")

#: CIPP's own EIDSCA tests: assignments and pass condition verbatim, translated over `$Fido2Config`, the
#: policy's configuration whose id -eq 'Fido2'.
CIPP_EIDSCA: dict[str, tuple[list[str], str, Callable[[Json], bool]]] = {
    "EIDSCAAF01": ([], "$Fido2Config.state -eq 'enabled'", lambda c: ps_eq(c.get("state"), "enabled")),
    "EIDSCAAF02": ([], "$Fido2Config.isSelfServiceRegistrationAllowed -eq $true",
                   lambda c: c.get("isSelfServiceRegistrationAllowed") is True),
    "EIDSCAAF03": ([], "$Fido2Config.isAttestationEnforced -eq $true",
                   lambda c: c.get("isAttestationEnforced") is True),
    "EIDSCAAF04": ([], "$Fido2Config.keyRestrictions.isEnforced -eq $true",
                   lambda c: _key_restrictions(c).get("isEnforced") is True),
    "EIDSCAAF05": (["$aaGuids = $Fido2Config.keyRestrictions.aaGuids"], "$aaGuids -and $aaGuids.Count -gt 0",
                   lambda c: len(_key_restrictions(c).get("aaGuids") or []) > 0),
    "EIDSCAAF06": (["$aaGuids = $Fido2Config.keyRestrictions.aaGuids",
                    "$enforcementType = $Fido2Config.keyRestrictions.enforcementType"],
                   "$aaGuids -and $aaGuids.Count -gt 0 -and $enforcementType -in @('allow', 'block')",
                   lambda c: len(_key_restrictions(c).get("aaGuids") or []) > 0
                   and ps_string(_key_restrictions(c).get("enforcementType")).casefold() in ("allow", "block")),
}


def _fido2_enabled(c: Json) -> bool:
    return ps_eq(c.get("state"), "enabled")


#: CIPP's Zero Trust tests: the pass condition verbatim; its variables as CIPP-API assigns them
#: (Modules/CIPPTests/Public/Tests/ZTNA/Identity/Invoke-CippTestZTNA2183{8,9}.ps1):
#: `$Fido2Enabled = $Fido2Config.state -eq 'enabled'`,
#: `$HasIncludeTargets = $IncludeTargets -and $IncludeTargets.Count -gt 0`.
CIPP_ZTNA: dict[str, tuple[str, Callable[[Json], bool]]] = {
    "ZTNA21838": ("$Fido2Enabled", _fido2_enabled),
    "ZTNA21839": ("$Fido2Enabled -and $HasIncludeTargets",
                  lambda c: _fido2_enabled(c) and len(c.get("includeTargets") or []) > 0),
}


async def cipp_policy_fido2(graph: PeerGraph) -> Json:
    """`$Fido2Config`: the Fido2 entry of CIPP's cached beta authentication methods policy."""
    policy = await graph.get(*CIPP_POLICY_READ)
    (fido2,) = [c for c in policy.get("authenticationMethodConfigurations", []) if ps_eq(c.get("id"), "Fido2")]
    return fido2


def cipp_test_verdicts(fido2: Json) -> dict[str, str]:
    """CIPP's verdict on its EIDSCAAF01-06 and ZTNA21838/21839 tests."""
    tests = published(CIPP)["tests"]
    assert sorted(tests["EIDSCA"]) == sorted(CIPP_EIDSCA), "CIPP's set of EIDSCA tests changed upstream"
    assert sorted(tests["ZeroTrustAssessment"]) == sorted(CIPP_ZTNA), "CIPP's set of ZTNA tests changed upstream"
    out: dict[str, str] = {}
    for test_id, (assignments, condition, evaluate) in CIPP_EIDSCA.items():
        test = tests["EIDSCA"][test_id]
        assert (test["assignments_verbatim"], test["pass_condition_verbatim"]) == (assignments, condition), \
            f"CIPP {test_id} changed upstream"
        out[test_id] = verdict(evaluate(fido2))
    for test_id, (condition, evaluate) in CIPP_ZTNA.items():
        assert tests["ZeroTrustAssessment"][test_id]["pass_condition_verbatim"] == condition, \
            f"CIPP {test_id} changed upstream"
        out[test_id] = verdict(evaluate(fido2))
    return out


#: How CIPP's EnableFIDO2 baseline reads, as translated by `cipp_enable_fido2`.
ENABLE_FIDO2_READ = {"cacheType": "AuthenticationMethodsPolicy", "array": "authenticationMethodConfigurations",
                     "filter": [{"property": "id", "value": "Fido2"}]}


def cipp_enable_fido2(policy_fido2: Json) -> tuple[str, dict[str, tuple[Any, Any]]]:
    """standards.EnableFIDO2: the baseline's `expected` compared as a subset of the Fido2 entry (its verdict),
    and what its remediation PATCH would change (field: (would write, tenant has))."""
    standard = published(CIPP)["standards"]["standards.EnableFIDO2"]
    baseline = standard["baseline_json_verbatim"]
    assert baseline["read"] == ENABLE_FIDO2_READ and baseline["compare"] == "subset", "EnableFIDO2 changed upstream"
    assert baseline["expected"] == {"state": "enabled"} == {standard["compliance_rule"]["property"]:
                                                             standard["compliance_rule"]["expected"]}
    passed = all(policy_fido2.get(key) == value for key, value in baseline["expected"].items())
    (request,) = baseline["remediate"]["requests"]
    assert request["method"] == "PATCH", "EnableFIDO2's remediation changed upstream"
    would_change = {key: (value, policy_fido2.get(key)) for key, value in request["body"].items()
                    if key != "@odata.type" and policy_fido2.get(key) != value}
    return verdict(passed), would_change


#: What FIDO2PasskeyProfiles compares on the default profile, in the file's words and as translated.
PASSKEY_PROFILE_FIELDS = ("passkeyTypes", "attestationEnforcement", "keyRestrictions.isEnforced",
                          "keyRestrictions.enforcementType", "keyRestrictions.aaGuids (order-insensitive set compare)")


@dataclass(frozen=True)
class CippPasskeyProfileSettings:
    """The settings an administrator gives standards.FIDO2PasskeyProfiles (its addedComponent fields)."""

    PasskeyTypes: str
    AttestationEnforcement: str
    EnforceKeyRestrictions: bool
    AAGUIDs: str
    EnforcementType: str | None = None

    def validate(self) -> None:
        """The values are among those the standard's form offers."""
        allowed = published(CIPP)["standards"]["standards.FIDO2PasskeyProfiles"]["setting_values_allowed"]
        assert self.PasskeyTypes in allowed["PasskeyTypes"]
        assert self.AttestationEnforcement in allowed["AttestationEnforcement"]
        assert self.EnforcementType is None or self.EnforcementType in allowed["EnforcementType"]
        assert allowed["EnforceKeyRestrictions"] == "boolean" and allowed["AAGUIDs"] == "comma-separated string"


def cipp_passkey_profiles(fido2: Json, settings: CippPasskeyProfileSettings) -> tuple[str, str]:
    """standards.FIDO2PasskeyProfiles' verdict on the direct read of the FIDO2 configuration, with CIPP's
    alert text when it is not compliant."""
    standard = published(CIPP)["standards"]["standards.FIDO2PasskeyProfiles"]
    rule = standard["compliance_rule"]
    assert tuple(rule["all_must_equal_settings"]) == PASSKEY_PROFILE_FIELDS, "FIDO2PasskeyProfiles changed upstream"
    assert rule["evaluated_profile"] == "passkeyProfiles[] element whose id == defaultPasskeyProfile"
    settings.validate()
    enforcement_type = settings.EnforcementType or rule["enforcementType_default_when_unset"]
    wanted = sorted(a.strip().casefold() for a in settings.AAGUIDs.split(",") if a.strip())
    profiles = [p for p in fido2.get("passkeyProfiles") or []
                if ps_eq(p.get("id"), ps_string(fido2.get("defaultPasskeyProfile")))]
    if not profiles:
        alert = re.fullmatch(r"non-compliant \(alert text: '(.+)'\)", rule["no_default_profile"])
        assert alert, "FIDO2PasskeyProfiles' verdict without a default profile changed upstream"
        return FAILED, alert.group(1)
    (profile,) = profiles
    restrictions = profile.get("keyRestrictions") or {}
    # PowerShell's -eq and Compare-Object ignore case.
    compliant = (ps_eq(profile.get("passkeyTypes"), settings.PasskeyTypes)
                 and ps_eq(profile.get("attestationEnforcement"), settings.AttestationEnforcement)
                 and restrictions.get("isEnforced") is settings.EnforceKeyRestrictions
                 and ps_eq(restrictions.get("enforcementType"), enforcement_type)
                 and sorted(str(a).casefold() for a in restrictions.get("aaGuids") or []) == wanted)
    # The alert text is Invoke-CIPPStandardFIDO2PasskeyProfiles.ps1's (the file gives only the other one).
    return (PASSED, "") if compliant else (FAILED, "Default passkey profile exists but is not configured as expected.")


async def cipp_fido2_direct(graph: PeerGraph) -> Json:
    """FIDO2PasskeyProfiles' own read of the FIDO2 configuration, as the file gives it (beta, lower-case
    `authenticationmethodspolicy`, `/Fido2` path form)."""
    standard = published(CIPP)["standards"]["standards.FIDO2PasskeyProfiles"]
    return await graph.get(*_graph_url(standard["graph_read"]))


# ------------------------------------------------------------------ ScubaGear MS.AAD.3.x
SCUBAGEAR = "scubagear-aad-phishing-resistant-mfa.json"
#: ScubaGear reads Conditional Access with this cmdlet, which is GET beta identity/conditionalAccess/policies.
SCUBA_CA_CMDLET = "Get-MgBetaIdentityConditionalAccessPolicy"
SCUBA_CA_READ = ("beta", "identity/conditionalAccess/policies")
PHISHING_RESISTANT = ("windowsHelloForBusiness", "fido2", "x509CertificateMultiFactor")

#: The built-in role template ids of the roles ScubaGear's "Highly Privileged Roles" section names (fixed
#: across tenants; Microsoft Entra built-in roles reference). ScubaGear reads them from the tenant.
PRIVILEGED_ROLE_TEMPLATE_IDS = {
    "Global Administrator": "62e90394-69f5-4237-9190-012177145e10",
    "Privileged Role Administrator": "e8611ab8-c189-46e8-94e1-60213ab1f814",
    "User Administrator": "fe930be7-5e62-47db-91af-98c3a49a38b1",
    "SharePoint Administrator": "f28a1f50-f6e7-4571-818b-6a12f2af6b6c",
    "Exchange Administrator": "29232cdf-9323-42fd-ade2-1d097af3e4de",
    "Hybrid Identity Administrator": "8ac3fc64-6eca-42ea-9e69-59f4c7b60eb2",
    "Application Administrator": "9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3",
    "Cloud Application Administrator": "158c047a-c907-4556-b7ef-446551a6b5f7",
}


@dataclass(frozen=True)
class ScubaConfig:
    """The part of a ScubaGear configuration file these policies read: per policy id, the CapExclusions
    (`Users`, `Groups`) an agency declares for its emergency-access accounts."""

    cap_exclusions: Mapping[str, Mapping[str, list[str]]] = field(default_factory=dict)

    def permitted(self, policy_id: str, kind: str) -> set[str]:
        return {str(x).lower() for x in (self.cap_exclusions.get(policy_id) or {}).get(kind, [])}


def _users(policy: Json) -> Json:
    return (policy.get("conditions") or {}).get("users") or {}


def _apps(policy: Json) -> Json:
    return (policy.get("conditions") or {}).get("applications") or {}


def is_phishing_resistant_mfa(policy: Json) -> bool:
    """IsPhishingResistantMFA: the strength's allowedCombinations, as a set, is non-empty and inside the
    acceptable set (combinationConfigurations are not looked at)."""
    data = published(SCUBAGEAR)
    rule = data["rego_rules_as_data"]["IsPhishingResistantMFA"]
    assert tuple(rule["acceptable_set"]) == PHISHING_RESISTANT == tuple(data["phishing_resistant_allowed_combinations"])
    assert rule["true_when"] == ["set minus acceptable_set is empty", "set is non-empty"]
    strength = (policy.get("grantControls") or {}).get("authenticationStrength") or {}
    combinations = set(strength.get("allowedCombinations") or [])
    return not combinations - set(PHISHING_RESISTANT) and len(combinations) > 0


def _exclusions_permitted(policy: Json, config: ScubaConfig, policy_id: str) -> bool:
    """User and group exclusions all declared in the config's CapExclusions (Utils/AAD.rego
    UserExclusionsFullyExempt, GroupExclusionsFullyExempt); no application excluded (AADConfig.rego:
    IsEmptyContainer(ExcludeApplications)); no guests or external users excluded, which the config cannot declare."""
    users = _users(policy)
    return ({str(u).lower() for u in users.get("excludeUsers") or []} <= config.permitted(policy_id, "Users")
            and {str(g).lower() for g in users.get("excludeGroups") or []} <= config.permitted(policy_id, "Groups")
            and not _apps(policy).get("excludeApplications")
            and not users.get("excludeGuestsOrExternalUsers"))


ScubaCondition = Callable[[Json, ScubaConfig], bool]
#: Every condition of the file's rego_rules_as_data, verbatim, and its translation over one CA policy read
#: with Get-MgBetaIdentityConditionalAccessPolicy (PascalCase in Rego, camelCase in Graph's JSON).
SCUBA_CONDITIONS: dict[str, ScubaCondition] = {
    "Conditions.Users.IncludeUsers contains 'All'": lambda p, c: "All" in (_users(p).get("includeUsers") or []),
    "Conditions.Applications.IncludeApplications contains 'All'":
        lambda p, c: "All" in (_apps(p).get("includeApplications") or []),
    "count(Conditions.Users.ExcludeRoles) == 0": lambda p, c: not _users(p).get("excludeRoles"),
    "State == 'enabled'": lambda p, c: p.get("state") == "enabled",
    "IsPhishingResistantMFA(policy) == true": lambda p, c: is_phishing_resistant_mfa(p),
    "user/group/app/guest exclusions all permitted by the ScubaGear config for MS.AAD.3.1v1":
        lambda p, c: _exclusions_permitted(p, c, "MS.AAD.3.1v1"),
    "every privileged role template id (input.privileged_roles RoleTemplateId) is in Conditions.Users.IncludeRoles":
        lambda p, c: set(PRIVILEGED_ROLE_TEMPLATE_IDS.values())
        <= {str(r).lower() for r in _users(p).get("includeRoles") or []},
    "exclusions permitted by config for MS.AAD.3.6v1": lambda p, c: _exclusions_permitted(p, c, "MS.AAD.3.6v1"),
}
#: The CA policies ScubaGear evaluates here; MS.AAD.3.5v2 is about other methods (see scuba_not_evaluated).
SCUBA_CA_POLICIES = ("MS.AAD.3.1v1", "MS.AAD.3.6v1")


def _privileged_role_names() -> list[str]:
    section = published(SCUBAGEAR)["highly_privileged_roles_section_verbatim"]
    return re.findall(r"^- (.+)$", section, flags=re.MULTILINE)


def scuba_ca_rules() -> dict[str, list[str]]:
    """The conditions of MS.AAD.3.1v1 and 3.6v1, each asserted to be one translated here."""
    data = published(SCUBAGEAR)
    assert sorted(_privileged_role_names()) == sorted(PRIVILEGED_ROLE_TEMPLATE_IDS), "privileged roles changed"
    rules: dict[str, list[str]] = {}
    for policy_id in SCUBA_CA_POLICIES:
        rule = data["rego_rules_as_data"][policy_id]
        assert rule["pass_when"] == "at least one CA policy matches all of" and rule["commandlet"] == [SCUBA_CA_CMDLET]
        assert set(rule["conditions"]) <= set(SCUBA_CONDITIONS), f"{policy_id}'s conditions changed upstream"
        rules[policy_id] = rule["conditions"]
    return rules


async def scuba_ca_policies(graph: PeerGraph) -> list[Json]:
    """What Get-MgBetaIdentityConditionalAccessPolicy -All returns."""
    return list((await graph.get(*SCUBA_CA_READ)).get("value", []))


@dataclass(frozen=True)
class ScubaResult:
    """A policy's verdict and, for each CA policy in the tenant (by displayName), the conditions it misses."""

    verdict: str
    misses: dict[str, list[str]]


def scuba_verdicts(ca_policies: list[Json], config: ScubaConfig) -> dict[str, ScubaResult]:
    """ScubaGear's verdict on MS.AAD.3.1v1 and 3.6v1: passed when one CA policy meets every condition."""
    out: dict[str, ScubaResult] = {}
    for policy_id, conditions in scuba_ca_rules().items():
        misses = {str(p.get("displayName")): [c for c in conditions if not SCUBA_CONDITIONS[c](p, config)]
                  for p in ca_policies}
        out[policy_id] = ScubaResult(verdict(any(not m for m in misses.values())), misses)
    return out


def scuba_not_evaluated() -> dict[str, str]:
    """The ScubaGear policies in the file not evaluated here, with why; with SCUBA_CA_POLICIES they are all of
    the file's policies, so a policy added upstream fails the test until it is placed."""
    data = published(SCUBAGEAR)
    rule = data["rego_rules_as_data"]["MS.AAD.3.5v2"]
    assert rule["pass_when"] == ("every authentication method configuration with Id in ['Sms','Voice','Email'] "
                                 "has State == 'disabled'")
    out = {"MS.AAD.3.5v2": "SMS, Voice and Email OTP are methods Passkey Guard neither reads nor writes, and the "
                           "simulator serves only the Fido2 configuration, so the rule would pass vacuously"}
    rules = data["rego_rules_as_data"].keys() - {"IsPhishingResistantMFA"}
    assert sorted([*SCUBA_CA_POLICIES, *out]) == sorted(data["policies"]) == sorted(rules)
    return out
