"""The desired-state document as pydantic models: the one source of truth for its shape and rules.

`shared.policy.document.validate_document` validates with `DesiredStateDocument` and turns the result into
the frozen dataclasses the plan reads; `desired-state.schema.json` is generated from these models
(`make schemas`). Rules the JSON Schema cannot state live here too, in validators, and are named in the
schema's description: AAGUIDs and ids compare case-insensitively (`ABC…` and `abc…` are duplicates), and
an AAGUID may not be both kept (`aaguids`) and removed (`remove`).

Every value that can be wrong says why in the project's words (`not a GUID`, `duplicate of aaguids[0]`),
through `shared.schemas.problems`.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeAlias

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from shared.ids import GUID, GUID_PATTERN, is_guid
from shared.policy.aaguids import AUTHENTICATOR_AAGUIDS
from shared.policy.document import (
    ALL_USERS,
    CA_ALL,
    CA_APP_KEYWORDS,
    CA_STATES,
    DEFAULT_CA_STATE,
    ENFORCEMENT_TYPES,
    METHOD_STATES,
)
from shared.schemas.base import StrictModel, drop_nulls
from shared.schemas.problems import problem, type_name

#: The GUID shape (shared.ids), unanchored, for the patterns that also allow keywords.
GUID_RE = GUID.pattern
_NON_BLANK = re.compile(r"\S")


class DocumentModel(StrictModel):
    """A part of the document (see `StrictModel`)."""


# --- values ------------------------------------------------------------------------------------------
def _id_check(what: str, keywords: Sequence[str] = ()) -> BeforeValidator:
    """A GUID (lowercased) or one of `keywords` (kept as written); anything else is `not <what>`."""

    def check(value: object) -> object:
        if isinstance(value, str) and value in keywords:
            return value
        if is_guid(value):
            return str(value).lower()
        raise problem(f"not {what}")

    return BeforeValidator(check)


def _id_schema(keywords: Sequence[str] = ()) -> WithJsonSchema:
    pattern = "^(" + "|".join([*keywords, GUID_RE]) + ")$" if keywords else GUID_PATTERN
    return WithJsonSchema({"type": "string", "pattern": pattern})


def _text_check(*, blank_ok: bool = False, blank: str = "must not be empty",
                not_text: str | None = None) -> BeforeValidator:
    """A string; unless `blank_ok`, one with something besides whitespace. `not_text`: the problem of a value
    that is not a string (default: "must be a string, got <type>")."""

    def check(value: object) -> object:
        if not isinstance(value, str):
            raise problem(not_text or f"must be a string, got {type_name(value)}")
        if not blank_ok and not _NON_BLANK.search(value):
            raise problem(blank)
        return value

    return BeforeValidator(check)


def _one_of(values: Sequence[str], default: str) -> Any:
    """One of `values` (the enum of the JSON Schema)."""

    def check(value: object) -> object:
        if not isinstance(value, str) or value not in values:
            raise problem("must be one of: " + ", ".join(values))
        return value

    return (BeforeValidator(check), WithJsonSchema({"enum": list(values), "default": default}))


_APPS = CA_APP_KEYWORDS
Guid: TypeAlias = Annotated[str, _id_check("a GUID"), _id_schema()]
GroupId: TypeAlias = Annotated[str, _id_check("a group id (GUID)"), _id_schema()]
UserId: TypeAlias = Annotated[str, _id_check("a user id (GUID)"), _id_schema()]
IncludeTargetId: TypeAlias = Annotated[str, _id_check('"all_users" or a group id (GUID)', (ALL_USERS,)),
                                       _id_schema((ALL_USERS,))]
CaUser: TypeAlias = Annotated[str, _id_check('"All" or a user id (GUID)', (CA_ALL,)), _id_schema((CA_ALL,))]
CaApplication: TypeAlias = Annotated[str, _id_check("an application id (GUID) or one of " + ", ".join(_APPS), _APPS),
                                     _id_schema(_APPS)]
NonBlank: TypeAlias = Annotated[str, _text_check(), WithJsonSchema({"type": "string", "pattern": r"\S"})]
AnyText: TypeAlias = Annotated[str, _text_check(blank_ok=True), WithJsonSchema({"type": "string"})]
MethodState: TypeAlias = Annotated[str, *_one_of(METHOD_STATES, "enabled")]
EnforcementType: TypeAlias = Annotated[str, *_one_of(ENFORCEMENT_TYPES, "allow")]
CaState: TypeAlias = Annotated[str, *_one_of(CA_STATES, DEFAULT_CA_STATE)]


def _unique(values: Sequence[Any], name: str, key: Callable[[Any], str] = str.lower) -> None:
    """Refuse repeats (case-insensitively), naming each repeat by its index and the first one's."""
    first_at: dict[str, int] = {}
    found: list[tuple[str, str]] = []
    for i, value in enumerate(values):
        k = key(value)
        if k in first_at:
            found.append((f"[{i}]", f"duplicate of {name}[{first_at[k]}]"))
        else:
            first_at[k] = i
    if found:
        raise problem(found[0][1], at=found)


def _unique_list(values: list[Any], info: ValidationInfo) -> list[Any]:
    _unique(values, str(info.field_name))
    return values


UNIQUE: dict[str, Any] = {"uniqueItems": True}


# --- the passkey method ----------------------------------------------------------------------------
class IncludeTarget(DocumentModel):
    """An include target written as an object, with a name for people."""

    id: IncludeTargetId
    displayName: NonBlank | None = None


class ExcludeTarget(DocumentModel):
    """An exclude target (a security group) written as an object, with a name for people."""

    id: GroupId
    displayName: NonBlank | None = None


def _target_kind(value: Any) -> str:
    return "<object>" if isinstance(value, dict) else "<id>"


IncludeItem = Annotated[Annotated[IncludeTargetId, Tag("<id>")] | Annotated[IncludeTarget, Tag("<object>")],
                        Discriminator(_target_kind)]
ExcludeItem = Annotated[Annotated[GroupId, Tag("<id>")] | Annotated[ExcludeTarget, Tag("<object>")],
                        Discriminator(_target_kind)]


def target_id(item: str | IncludeTarget | ExcludeTarget) -> str:
    """The (normalised) id of a target written either way."""
    return item if isinstance(item, str) else item.id


_ALL_USERS_ALONE: dict[str, Any] = {
    "if": {"contains": {"anyOf": [{"const": ALL_USERS},
                                  {"type": "object", "required": ["id"], "properties": {"id": {"const": ALL_USERS}}}]}},
    "then": {"maxItems": 1},
}


class KeyRestrictions(DocumentModel):
    """AAGUID restrictions. The resulting list is the tenant's current list, plus aaguids, minus remove: an AAGUID
    is only ever dropped by listing it in remove."""

    model_config = ConfigDict(json_schema_extra=lambda schema: _authenticator_rule(schema))

    enforced: bool = True
    enforcementType: EnforcementType = "allow"
    aaguids: list[Guid] = Field(default=list(AUTHENTICATOR_AAGUIDS), json_schema_extra=UNIQUE)
    remove: list[Guid] = Field(default=[], json_schema_extra=UNIQUE)

    _unique_lists = field_validator("aaguids", "remove")(_unique_list)

    @model_validator(mode="after")
    def _keep_or_remove(self) -> KeyRestrictions:
        """Keep or remove an AAGUID, not both; an enforced allow list keeps Microsoft Authenticator."""
        found: list[tuple[str, str]] = []
        kept = set(self.aaguids)
        for i, aaguid in enumerate(self.remove):
            if aaguid in kept:
                found.append((f"remove[{i}]", "also listed in aaguids: keep it or remove it, not both"))
        if self.enforced and self.enforcementType == "allow":
            for required in AUTHENTICATOR_AAGUIDS:
                if required not in kept:
                    found.append(("aaguids", f"must include the Microsoft Authenticator AAGUID {required} when key "
                                             "restrictions are enforced in allow mode"))
            for i, aaguid in enumerate(self.remove):
                if aaguid in AUTHENTICATOR_AAGUIDS:
                    found.append((f"remove[{i}]",
                                  "cannot remove a Microsoft Authenticator AAGUID while enforcing an allow list"))
        if found:
            raise problem(found[0][1], at=found)
        return self


def _case_free(guid: str) -> str:
    """A pattern matching `guid` in any case (the JSON Schema has no case-insensitive flag)."""
    return "^" + "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in guid) + "$"


def _authenticator_rule(schema: dict[str, Any]) -> None:
    drop_nulls(schema)
    schema["if"] = {"properties": {"enforced": {"const": True}, "enforcementType": {"const": "allow"}}}
    schema["then"] = {"properties": {
        "aaguids": {"allOf": [{"contains": {"type": "string", "pattern": _case_free(a)}}
                              for a in AUTHENTICATOR_AAGUIDS]},
        "remove": {"not": {"contains": {"type": "string",
                                        "anyOf": [{"pattern": _case_free(a)} for a in AUTHENTICATOR_AAGUIDS]}}},
    }}


class PasskeyMethod(DocumentModel):
    """The Passkey (FIDO2) method policy (Protection > Authentication methods > Passkey (FIDO2))."""

    state: MethodState = "enabled"
    includeTargets: list[IncludeItem] = Field(
        min_length=1, json_schema_extra={**UNIQUE, **_ALL_USERS_ALONE},
        description='Who may use passkeys: "all_users" alone, or security groups (object ids; only security '
                    'groups are supported), each a group id or {"id", "displayName"}.')
    excludeTargets: list[ExcludeItem] = Field(default=[], json_schema_extra=UNIQUE,
                                              description="Security groups excluded from the method.")
    selfServiceRegistration: bool = Field(
        default=True, description="Allow self-service set up (keep true: otherwise users cannot register a "
                                  "passkey in MySecurityInfo).")
    attestationEnforced: bool = Field(
        default=False, description="Enforce attestation (the seed procedure says false for Authenticator passkeys).")
    keyRestrictions: KeyRestrictions = KeyRestrictions()
    passkeyProfile: NonBlank | None = Field(
        default=None, description="The passkey profile (name or id) this document manages on tenants that use "
                                  "passkey profiles; default: the tenant's default profile.")

    @field_validator("includeTargets", "excludeTargets")
    @classmethod
    def _targets_once(cls, values: list[Any], info: ValidationInfo) -> list[Any]:
        """A target once (ids compare case-insensitively); `all_users` stands alone."""
        _unique(values, str(info.field_name), key=target_id)
        if len(values) > 1 and any(target_id(v) == ALL_USERS for v in values):
            raise problem('"all_users" cannot be combined with other targets')
        return values


# --- the strength and Conditional Access ------------------------------------------------------------
class AuthenticationStrength(DocumentModel):
    """The custom authentication strength: Passkeys (FIDO2) restricted to allowedAaguids."""

    displayName: NonBlank
    description: AnyText | None = Field(default=None, description="Left as it is in the tenant when absent.")
    allowedAaguids: list[Guid] = Field(default=list(AUTHENTICATOR_AAGUIDS), min_length=1,
                                       json_schema_extra=UNIQUE)

    _unique_lists = field_validator("allowedAaguids")(_unique_list)


def _someone_included_rule(schema: dict[str, Any]) -> None:
    drop_nulls(schema)
    schema["anyOf"] = _SOMEONE_INCLUDED


_SOMEONE_INCLUDED: list[Any] = [{"required": [name], "properties": {name: {"minItems": 1}}}
                     for name in ("includeUsers", "includeGroups")]


class ConditionalAccess(DocumentModel):
    """The Conditional Access policy that requires the strength for the sensitive resources. Omit the whole
    section to leave Conditional Access alone."""

    model_config = ConfigDict(json_schema_extra=lambda schema: _someone_included_rule(schema))

    displayName: NonBlank
    state: CaState = DEFAULT_CA_STATE
    includeUsers: list[CaUser] = Field(default=[], json_schema_extra=UNIQUE)
    includeGroups: list[GroupId] = Field(default=[], json_schema_extra=UNIQUE)
    excludeUsers: list[UserId] = Field(default=[], json_schema_extra=UNIQUE,
                                       description="Emergency-access (break-glass) accounts.")
    excludeGroups: list[GroupId] = Field(default=[], json_schema_extra=UNIQUE,
                                         description="Emergency-access groups.")
    includeApplications: list[CaApplication] = Field(
        min_length=1, json_schema_extra=UNIQUE,
        description="The sensitive resources: application ids, or All, Office365, MicrosoftAdminPortals.")

    _unique_lists = field_validator("includeUsers", "includeGroups", "excludeUsers", "excludeGroups",
                                    "includeApplications")(_unique_list)

    @model_validator(mode="after")
    def _someone_included(self) -> ConditionalAccess:
        if not (self.includeUsers or self.includeGroups):
            raise problem("needs at least one entry in includeUsers or includeGroups")
        return self


# --- the document -----------------------------------------------------------------------------------
def _aaguid_names(value: object) -> object:
    """Names keyed by AAGUID: each key once, case-insensitively (checked before the keys are lowercased)."""
    if isinstance(value, dict):
        seen: set[str] = set()
        found: list[tuple[str, str]] = []
        for key in value:
            if is_guid(key):
                if key.lower() in seen:
                    found.append((str(key), "duplicate AAGUID (names are matched case-insensitively)"))
                seen.add(key.lower())
        if found:
            raise problem(found[0][1], at=found)
    return value


def _aaguid_key(value: object) -> object:
    if not is_guid(value):
        raise problem("key is not a GUID")
    return str(value).lower()


_NAME_PROBLEM = "must be a non-empty string"
AaguidName: TypeAlias = Annotated[str, _text_check(blank=_NAME_PROBLEM, not_text=_NAME_PROBLEM)]
AaguidNames = Annotated[
    dict[Annotated[str, BeforeValidator(_aaguid_key)], AaguidName],
    BeforeValidator(_aaguid_names),
    WithJsonSchema({"type": "object", "propertyNames": {"pattern": f"^{GUID_RE}$"},
                    "additionalProperties": {"type": "string", "pattern": r"\S"},
                    "description": "The administrator's own names for AAGUIDs (hardware keys), shown beside them "
                                   "in plans and reports. Never a security decision."}),
]

SCHEMA_DESCRIPTION = (
    "What the organisation decided for the Passkey (FIDO2) authentication method, the custom authentication "
    "strength that requires approved passkeys, and (optionally) the Conditional Access policy that requires the "
    "strength. Generated from shared/schemas/document.py (make schemas), whose validators add two rules a schema "
    "cannot state: AAGUIDs and ids are compared case-insensitively (so differently-cased repeats are "
    "duplicates), and an AAGUID may not be listed in both keyRestrictions.aaguids and keyRestrictions.remove."
)


def _top(schema: dict[str, Any]) -> None:
    drop_nulls(schema)
    schema["description"] = SCHEMA_DESCRIPTION


class DesiredStateDocument(DocumentModel):
    """Passkey Guard desired state."""

    model_config = ConfigDict(title="Passkey Guard desired state", json_schema_extra=lambda schema: _top(schema))

    schema_: AnyText | None = Field(default=None, alias="$schema")
    description: AnyText | None = None
    passkeyMethod: PasskeyMethod
    aaguidNames: AaguidNames = {}
    authenticationStrength: AuthenticationStrength
    conditionalAccess: ConditionalAccess | None = None


def document_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the document, as committed in desired-state.schema.json."""
    schema = DesiredStateDocument.model_json_schema(by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "urn:passkey-guard:desired-state",
            **without_titles(schema)}


def without_titles(node: Any) -> Any:
    """pydantic's generated `title` of every field and model is noise beside the names themselves; a
    description from a docstring is one line."""
    if isinstance(node, dict):
        return {k: " ".join(v.split()) if k == "description" and isinstance(v, str) else without_titles(v)
                for k, v in node.items() if not (k == "title" and isinstance(v, str))}
    if isinstance(node, list):
        return [without_titles(v) for v in node]
    return node
