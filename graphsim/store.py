"""Tenant state held by the simulator: users and their passkeys, groups, policies, subscriptions.

Objects are kept in Graph v1.0's own JSON shapes. Users are indexed by lower-case id and lower-case
UPN, so lookups never scan. Every user change appends `(user, changed property names)` to an
append-only change log; the log index is the change sequence number that delta tokens carry, which
lets a delta round read only the changes since its token (see `graphsim.delta`). Lifecycle changes
use the pseudo-properties in `LIFECYCLE`. Listeners (the notifier) hear about each user change.
"""
from __future__ import annotations

import base64
import bisect
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from graphsim.errors import GraphApiError, bad_request

log = logging.getLogger(__name__)

DEFAULT_TENANT_ID = "11111111-1111-4111-8111-111111111111"
GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

USER_PROPERTIES = (
    "aboutMe accountEnabled ageGroup assignedLicenses assignedPlans birthday businessPhones city companyName "
    "consentProvidedForMinor country createdDateTime creationType deletedDateTime department displayName "
    "employeeHireDate employeeId employeeLeaveDateTime employeeOrgData employeeType externalUserState "
    "externalUserStateChangeDateTime faxNumber givenName hireDate id identities imAddresses interests "
    "isResourceAccount jobTitle lastPasswordChangeDateTime legalAgeGroupClassification licenseAssignmentStates "
    "mail mailNickname mobilePhone mySite officeLocation onPremisesDistinguishedName onPremisesDomainName "
    "onPremisesExtensionAttributes onPremisesImmutableId onPremisesLastSyncDateTime onPremisesProvisioningErrors "
    "onPremisesSamAccountName onPremisesSecurityIdentifier onPremisesSyncEnabled onPremisesUserPrincipalName "
    "otherMails passwordPolicies pastProjects postalCode preferredDataLocation preferredLanguage preferredName "
    "provisionedPlans proxyAddresses responsibilities schools securityIdentifier showInAddressList "
    "signInSessionsValidFromDateTime skills state streetAddress surname usageLocation userPrincipalName userType"
).split()
USER_DEFAULT_SELECT = ("businessPhones", "displayName", "givenName", "jobTitle", "mail", "mobilePhone",
                       "officeLocation", "preferredLanguage", "surname", "userPrincipalName", "id")
USER_WRITABLE = frozenset(
    "accountEnabled ageGroup birthday businessPhones city companyName consentProvidedForMinor country department "
    "displayName employeeHireDate employeeId employeeLeaveDateTime employeeOrgData employeeType faxNumber givenName "
    "identities interests jobTitle mail mailNickname mobilePhone mySite officeLocation onPremisesExtensionAttributes "
    "onPremisesImmutableId otherMails passwordPolicies passwordProfile pastProjects postalCode preferredDataLocation "
    "preferredLanguage preferredName responsibilities schools showInAddressList skills state streetAddress surname "
    "usageLocation userPrincipalName userType aboutMe hireDate".split())
# Properties an on-premises-synced user keeps from its source of authority.
SYNCED_PROPERTIES = frozenset("userPrincipalName displayName givenName surname mail mailNickname "
                              "onPremisesImmutableId jobTitle department".split())
USER_COLLECTIONS = frozenset("businessPhones otherMails proxyAddresses identities imAddresses interests "
                             "pastProjects responsibilities schools skills assignedLicenses assignedPlans "
                             "provisionedPlans licenseAssignmentStates onPremisesProvisioningErrors".split())
GROUP_PROPERTIES = (
    "id deletedDateTime classification createdDateTime creationOptions description displayName expirationDateTime "
    "groupTypes isAssignableToRole mail mailEnabled mailNickname membershipRule membershipRuleProcessingState "
    "onPremisesDomainName onPremisesLastSyncDateTime onPremisesSamAccountName onPremisesSecurityIdentifier "
    "onPremisesSyncEnabled preferredDataLocation preferredLanguage proxyAddresses renewedDateTime "
    "resourceBehaviorOptions resourceProvisioningOptions securityEnabled securityIdentifier theme uniqueName "
    "visibility"
).split()
FIDO2_METHOD_FIELDS = ("id", "displayName", "createdDateTime", "aaGuid", "model", "attestationCertificates",
                       "attestationLevel", "passkeyType")

CREATED, DELETED, RESTORED, PURGED = "@created", "@deleted", "@restored", "@purged"
LIFECYCLE = frozenset({CREATED, DELETED, RESTORED, PURGED})


def now_iso() -> str:
    """Current UTC time in Graph's format."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_guid(value: object) -> bool:
    """True for a string in GUID form."""
    return isinstance(value, str) and bool(GUID_RE.match(value))


class User:
    """One user: its Graph properties, passkeys and lifecycle state."""

    __slots__ = ("created_seq", "deleted", "fido2", "id", "key", "props", "purged")

    def __init__(self, props: dict[str, Any], created_seq: int) -> None:
        self.props = props
        self.id: str = props["id"]
        self.key = self.id.lower()
        self.created_seq = created_seq
        self.deleted = False
        self.purged = False
        self.fido2: list[dict[str, Any]] = []

    @property
    def upn(self) -> str:
        """The user's current UPN."""
        return str(self.props.get("userPrincipalName") or "")

    def view(self, select: Iterable[str] | None) -> dict[str, Any]:
        """The user as Graph returns it with this `$select` (None: Graph's default property set)."""
        out: dict[str, Any] = {}
        for name in (select or USER_DEFAULT_SELECT):
            value = self.props.get(name)
            if value is None and name in USER_COLLECTIONS:
                value = []
            out[name] = value
        return out


ChangeListener = Callable[[User, str], None]


class TenantStore:
    """All objects of one simulated tenant plus the user change log."""

    def __init__(self, tenant_id: str = DEFAULT_TENANT_ID) -> None:
        self.tenant_id = tenant_id
        self.domains: list[str] | None = None
        self.users: dict[str, User] = {}
        self.upn_index: dict[str, User] = {}
        self.user_order: list[User] = []
        self.log: list[tuple[User, frozenset[str]]] = []
        self.log_times: list[float] = []   # when each change was made, on `clock` (delta visibility)
        self.clock: Callable[[], float] = time.monotonic   # the simulator sets its own clock here
        self.groups: dict[str, dict[str, Any]] = {}
        self.service_principals: dict[str, dict[str, Any]] = {}   # by lower-cased id
        self.fido2_config: dict[str, Any] = {}
        self.strengths: dict[str, dict[str, Any]] = {}
        self.ca_policies: dict[str, dict[str, Any]] = {}
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.delta_generation = 0
        self.listeners: list[ChangeListener] = []

    # ------------------------------------------------------------------ change log
    @property
    def seq(self) -> int:
        """The sequence number of the latest change (0 before any)."""
        return len(self.log)

    def seq_made_before(self, moment: float) -> int:
        """The sequence number of the latest change made at or before `moment` (on `clock`): what a reader
        sees when changes take time to show (the log is in time order, so this is a bisection)."""
        return bisect.bisect_right(self.log_times, moment)

    def _record(self, user: User, props: frozenset[str], change_type: str = "updated") -> None:
        self.log.append((user, props))
        self.log_times.append(self.clock())
        for listener in self.listeners:
            try:
                listener(user, change_type)
            except Exception:  # a listener must never break a write
                log.exception("change listener failed")

    # ------------------------------------------------------------------ users
    def user_by_key(self, key: str, *, include_deleted: bool = False) -> User | None:
        """A user by object id or UPN (case-insensitive); soft-deleted ones only when asked."""
        low = key.lower()
        user = self.users.get(low) or self.upn_index.get(low)
        if user is None or (user.deleted and not include_deleted):
            return None
        return user

    def require_user(self, key: str) -> User:
        """Like `user_by_key` but a Graph 404 when missing."""
        user = self.user_by_key(key)
        if user is None:
            raise GraphApiError(404, "Request_ResourceNotFound",
                                f"Resource '{key}' does not exist or one of its queried reference-property "
                                "objects are not present.")
        return user

    def add_user(self, props: dict[str, Any], *, record: bool) -> User:
        """Insert a user (loading or creating); `record` puts it in the change log and notifies."""
        props = dict(props)
        methods = (props.pop("authentication", None) or {}).get("fido2Methods") or []
        props.setdefault("id", str(uuid.uuid4()))
        if not is_guid(props["id"]):
            raise bad_request(f"user id {props['id']!r} is not a GUID")
        if props["id"].lower() in self.users:
            raise bad_request(f"duplicate user id {props['id']}")
        upn = props.get("userPrincipalName")
        if not isinstance(upn, str) or "@" not in upn:
            raise bad_request("userPrincipalName is required and must contain '@'")
        if upn.lower() in self.upn_index:
            raise upn_conflict()
        props.setdefault("createdDateTime", now_iso())
        user = User(props, self.seq + (1 if record else 0))
        user.fido2 = [normalize_fido2_method(m) for m in methods]
        self.users[user.key] = user
        self.upn_index[upn.lower()] = user
        self.user_order.append(user)
        if record:
            self._record(user, frozenset(props) | {CREATED})
        return user

    def update_user(self, user: User, changes: dict[str, Any]) -> frozenset[str]:
        """Apply property changes; records and notifies only properties whose value really changed."""
        changed = {k for k, v in changes.items() if user.props.get(k) != v}
        if not changed:
            return frozenset()
        if "userPrincipalName" in changed:
            new = str(changes["userPrincipalName"]).lower()
            holder = self.upn_index.get(new)
            if holder is not None and holder is not user:
                raise upn_conflict()
            self.upn_index.pop(user.upn.lower(), None)
            self.upn_index[new] = user
        user.props.update({k: changes[k] for k in changed})
        frozen = frozenset(changed)
        self._record(user, frozen)
        return frozen

    def soft_delete_user(self, user: User) -> None:
        """Move a user to deleted items (Graph's DELETE /users/{id}); delta reports `@removed: changed`."""
        user.deleted = True
        user.props["deletedDateTime"] = now_iso()
        self._record(user, frozenset({DELETED, "deletedDateTime"}))

    def restore_user(self, user: User) -> None:
        """Bring a soft-deleted user back."""
        user.deleted = False
        user.props["deletedDateTime"] = None
        self._record(user, frozenset({RESTORED, "deletedDateTime"}))

    def purge_user(self, user: User) -> None:
        """Delete a soft-deleted user for good; delta reports `@removed: deleted`, notifications `deleted`."""
        user.purged = True
        self.users.pop(user.key, None)
        if self.upn_index.get(user.upn.lower()) is user:
            self.upn_index.pop(user.upn.lower())
        self._record(user, frozenset({PURGED}), "deleted")

    # ------------------------------------------------------------------ passkeys
    def add_fido2(self, user: User, method: dict[str, Any]) -> dict[str, Any]:
        """Register a passkey for a user (the `/_sim` control path; Graph has no create API)."""
        method = normalize_fido2_method(method)
        if any(m["id"] == method["id"] for m in user.fido2):
            raise GraphApiError(409, "conflict", f"a fido2 method with id {method['id']} already exists")
        user.fido2.append(method)
        return method

    # ------------------------------------------------------------------ dump
    def dump(self, *, include_users: bool = True) -> dict[str, Any]:
        """The whole tenant as plain JSON, for tests to compare with ground truth."""
        out: dict[str, Any] = {
            "tenantId": self.tenant_id, "seq": self.seq, "deltaGeneration": self.delta_generation,
            "groups": list(self.groups.values()),
            "authenticationMethodConfigurations": {"fido2": self.fido2_config},
            "authenticationStrengthPolicies": list(self.strengths.values()),
            "conditionalAccessPolicies": list(self.ca_policies.values()),
            "subscriptions": list(self.subscriptions.values()),
        }
        if include_users:
            live: list[dict[str, Any]] = []
            deleted: list[dict[str, Any]] = []
            for user in self.user_order:
                if user.purged:
                    continue
                doc = dict(user.props)
                doc["authentication"] = {"fido2Methods": list(user.fido2)}
                (deleted if user.deleted else live).append(doc)
            out["users"], out["deletedUsers"] = live, deleted
        out["userCount"] = sum(1 for u in self.users.values() if not u.deleted)
        return out


def upn_conflict() -> GraphApiError:
    """Graph's answer when a UPN is already taken."""
    return GraphApiError(400, "Request_BadRequest",
                         "Another object with the same value for property userPrincipalName already exists.")


def normalize_fido2_method(method: dict[str, Any]) -> dict[str, Any]:
    """A fido2AuthenticationMethod with every documented field present (server fills id and createdDateTime)."""
    if not isinstance(method, dict):
        raise bad_request("a fido2 method must be an object")
    unknown = set(method) - set(FIDO2_METHOD_FIELDS) - {"@odata.type"}
    if unknown:
        raise bad_request(f"unknown fido2 method fields: {sorted(unknown)}")
    out = {name: method.get(name) for name in FIDO2_METHOD_FIELDS}
    if not out["id"]:
        out["id"] = new_method_id()
    out["createdDateTime"] = out["createdDateTime"] or now_iso()
    out["attestationCertificates"] = list(out["attestationCertificates"] or [])
    out["attestationLevel"] = out["attestationLevel"] or "notAttested"
    out["passkeyType"] = out["passkeyType"] or "deviceBound"
    if out["attestationLevel"] not in ("attested", "notAttested"):
        raise bad_request("attestationLevel must be attested or notAttested")
    if out["passkeyType"] not in ("deviceBound", "synced"):
        raise bad_request("passkeyType must be deviceBound or synced")
    if out["aaGuid"] is not None and not is_guid(out["aaGuid"]):
        raise bad_request("aaGuid must be a GUID")
    return out


def new_method_id() -> str:
    """An opaque method id shaped like Graph's: Base64URL plus a padding digit."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes + uuid.uuid4().bytes).decode().rstrip("=") + "1"
