"""Settings: one typed, frozen object read once from the environment (or any mapping, in tests).

The constants below are the app-setting names that `infra/` writes into the function app, and the only
names the code reads. `tests/infra` fails when the two drift apart, so add a setting here *and* in
Bicep. Schedules (`*_SCHEDULE`) are read by the Functions host through `%NAME%` binding expressions in
`function_app.py`, not by this module.
"""
from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from shared.errors import ConfigError, SecretUnavailable
from shared.ids import is_guid

# --- the app-setting names (the same names Bicep writes) ------------------------------------------
TENANT_ID = "TENANT_ID"
GRAPH_BASE_URL = "GRAPH_BASE_URL"
GRAPH_DEV_TOKEN = "GRAPH_DEV_TOKEN"  # noqa: S105 (a setting name)
AZURE_CLIENT_ID = "AZURE_CLIENT_ID"
STATE_STORAGE = "STATE_STORAGE"
STATE_STORAGE_TABLE_URI = "STATE_STORAGE__tableServiceUri"
STATE_STORAGE_QUEUE_URI = "STATE_STORAGE__queueServiceUri"
STATE_STORAGE_CLIENT_ID = "STATE_STORAGE__clientId"
POLICY_FILE = "POLICY_FILE"
ENFORCEMENT_MODE = "ENFORCEMENT_MODE"
NOTIFICATION_URL = "NOTIFICATION_URL"
LIFECYCLE_NOTIFICATION_URL = "LIFECYCLE_NOTIFICATION_URL"
NOTIFICATION_CLIENT_STATE = "NOTIFICATION_CLIENT_STATE"
TICKET_WEBHOOK_SECRET = "TICKET_WEBHOOK_SECRET"  # noqa: S105 (a setting name)
REMOVE_STALE_PASSKEYS = "REMOVE_STALE_PASSKEYS"
STALE_PASSKEY_REMOVAL_MAX_PER_RUN = "STALE_PASSKEY_REMOVAL_MAX_PER_RUN"
ALLOW_ADHOC_DOCUMENTS = "ALLOW_ADHOC_DOCUMENTS"
APPLICATIONINSIGHTS_CONNECTION_STRING = "APPLICATIONINSIGHTS_CONNECTION_STRING"

# Read by the Functions host from binding expressions (%NAME%) in function_app.py.
POLICY_SCHEDULE = "POLICY_SCHEDULE"
SWEEP_SCHEDULE = "SWEEP_SCHEDULE"
TRACKER_SCHEDULE = "TRACKER_SCHEDULE"
SUBSCRIPTION_SCHEDULE = "SUBSCRIPTION_SCHEDULE"
EVENTS_PURGE_SCHEDULE = "EVENTS_PURGE_SCHEDULE"

#: Every app setting the code or its bindings read; infra must set exactly these (plus the host's own).
APP_SETTINGS: tuple[str, ...] = (
    TENANT_ID, GRAPH_BASE_URL, GRAPH_DEV_TOKEN, AZURE_CLIENT_ID, STATE_STORAGE_TABLE_URI,
    STATE_STORAGE_QUEUE_URI, STATE_STORAGE_CLIENT_ID, POLICY_FILE, ENFORCEMENT_MODE, NOTIFICATION_URL,
    LIFECYCLE_NOTIFICATION_URL, NOTIFICATION_CLIENT_STATE, TICKET_WEBHOOK_SECRET, REMOVE_STALE_PASSKEYS,
    APPLICATIONINSIGHTS_CONNECTION_STRING, POLICY_SCHEDULE, SWEEP_SCHEDULE,
    TRACKER_SCHEDULE, SUBSCRIPTION_SCHEDULE, EVENTS_PURGE_SCHEDULE, STALE_PASSKEY_REMOVAL_MAX_PER_RUN,
    ALLOW_ADHOC_DOCUMENTS,
)
#: Settings that only a developer's machine uses; never set in Azure.
LOCAL_ONLY_SETTINGS: tuple[str, ...] = (STATE_STORAGE, GRAPH_DEV_TOKEN)

# Set by App Service itself (never by infra/): "True" when App Service Authentication is on, i.e. the
# platform validated the caller's token and wrote X-MS-CLIENT-PRINCIPAL (shared/principal.py).
WEBSITE_AUTH_ENABLED = "WEBSITE_AUTH_ENABLED"
#: Platform settings the code reads; infra must not write them (that would fake the platform).
PLATFORM_SETTINGS: tuple[str, ...] = (WEBSITE_AUTH_ENABLED,)

DEFAULT_GRAPH_BASE_URL = "https://graph.microsoft.com/v1.0"
DEFAULT_POLICY_FILE = "policy/desired-state.json"
ENFORCEMENT_MODES = ("audit", "enforce")
QUEUE_NAME = "upn-changes"  # the queue trigger's queue; also named in infra/
POLICY_JOBS_QUEUE = "policy-jobs"  # HTTP plan/apply jobs for the policy_jobs trigger; also named in infra/
PASSKEY_READS_QUEUE = "passkey-reads"  # the slow lane: fido2Methods reads the processor defers; also named in infra/
#: Passkeys the tracker may delete in one run before further flags wait for an administrator's approval.
DEFAULT_STALE_PASSKEY_REMOVAL_MAX_PER_RUN = 25

#: Secret settings (name -> Settings attribute). Each one authenticates callers of an anonymous webhook.
SECRET_SETTINGS: dict[str, str] = {NOTIFICATION_CLIENT_STATE: "notification_client_state",
                                   TICKET_WEBHOOK_SECRET: "ticket_webhook_secret"}
#: A secret shorter than this is treated as missing (the generated ones are GUIDs or longer).
MIN_SECRET_CHARS = 32
#: What App Service hands the app, verbatim, when it cannot resolve a Key Vault reference.
KEY_VAULT_REFERENCE_PREFIX = "@microsoft.keyvault("
#: Stand-ins for a secret found in the README, docs, local.settings.example.json and the handbook (compared
#: case-insensitively); any other value written as `<...>` is a placeholder too.
SECRET_PLACEHOLDERS = frozenset({
    "<random string, at most 128 characters>", "<random string shared with the ticketing system>",
    "<random string of 32 to 128 characters>", "<random string of 32+ characters shared with the ticketing system>",
    "<secret>", "<secret ≤ 128 chars>", "changeme", "change-me", "change_me", "replace-me", "replaceme",
    "replace_me", "secret", "password", "todo", "xxx",
})

_LOOPBACK_HOSTS = {"localhost"}


def secret_problem(value: str | None) -> str | None:
    """Why a secret setting's value must not be used, as a reason code, or None when it is usable.

    An unresolved Key Vault reference can be derived from the host name and this repo, and a placeholder or a
    short value can be guessed, so each of them counts as no secret at all (fail closed).
    """
    text = (value or "").strip()
    if not text:
        return "missing"
    if text.lower().startswith(KEY_VAULT_REFERENCE_PREFIX):
        return "keyVaultReferenceUnresolved"
    if text.lower() in SECRET_PLACEHOLDERS or (text.startswith("<") and text.endswith(">")):
        return "placeholder"
    if len(text) < MIN_SECRET_CHARS:
        return "tooShort"
    return None


def is_loopback_url(url: str) -> bool:
    """True when `url` points at this machine (the Graph simulator, Azurite)."""
    host = urlparse(url).hostname or ""
    if host in _LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class StorageSettings:
    """Where state lives: a connection string (Azurite, local) or identity-based service URIs (Azure)."""

    connection_string: str | None = None
    table_uri: str | None = None
    queue_uri: str | None = None
    client_id: str | None = None

    @property
    def uses_identity(self) -> bool:
        return self.connection_string is None


@dataclass(frozen=True)
class Settings:
    """Everything the app reads from its environment, validated once."""

    tenant_id: str
    storage: StorageSettings
    graph_base_url: str = DEFAULT_GRAPH_BASE_URL
    graph_dev_token: str = "dev"  # noqa: S105 (only ever sent to loopback)
    azure_client_id: str | None = None
    policy_file: Path = Path(DEFAULT_POLICY_FILE)
    enforcement_mode: str = "audit"
    notification_url: str | None = None
    lifecycle_notification_url: str | None = None
    notification_client_state: str | None = None
    ticket_webhook_secret: str | None = None
    remove_stale_passkeys: bool = False
    stale_passkey_removal_max_per_run: int = DEFAULT_STALE_PASSKEY_REMOVAL_MAX_PER_RUN
    allow_adhoc_documents: bool = False
    auth_enabled: bool = False  # WEBSITE_AUTH_ENABLED: admin routes trust the principal header only then

    @property
    def graph_is_local(self) -> bool:
        """A loopback Graph (the simulator) gets the dev token instead of a real credential."""
        return is_loopback_url(self.graph_base_url)

    def require(self, attribute: str, setting: str) -> str:
        """The value of an optional setting a feature needs, or a ConfigError naming it."""
        value = getattr(self, attribute)
        if not value:
            raise ConfigError(f"setting {setting} is required for this operation but is not set")
        return str(value)

    def unavailable_secrets(self) -> dict[str, str]:
        """Secret settings that cannot be used, by setting name, with the reason code (never the value)."""
        problems = {name: secret_problem(getattr(self, attribute)) for name, attribute in SECRET_SETTINGS.items()}
        return {name: reason for name, reason in problems.items() if reason is not None}

    def secret(self, attribute: str) -> str:
        """A usable secret setting's value, or SecretUnavailable (503) naming the setting and the reason."""
        name = next(n for n, a in SECRET_SETTINGS.items() if a == attribute)
        value = getattr(self, attribute)
        reason = secret_problem(value)
        if reason is not None:
            raise SecretUnavailable(f"setting {name} is unavailable ({reason}); refusing until it holds a usable "
                                    f"secret of at least {MIN_SECRET_CHARS} characters")
        return str(value)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, base_dir: Path | None = None) -> Settings:
        """Read and validate the settings; a missing or malformed one raises ConfigError naming it.

        Checked in this order, so the first problem reported stays the same: tenant, Graph URL, storage,
        mode, the two switches, the two whole numbers, the clientState's length."""
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(name)
            return value.strip() if value and value.strip() else None

        tenant = _tenant_id(get)
        graph = _graph_base_url(get)
        storage = _storage(get)
        mode = (get(ENFORCEMENT_MODE) or "audit").lower()
        if mode not in ENFORCEMENT_MODES:
            raise ConfigError(f"setting {ENFORCEMENT_MODE} is malformed: expected audit or enforce, got {mode!r}")
        remove = _switch(get, REMOVE_STALE_PASSKEYS)
        adhoc = _switch(get, ALLOW_ADHOC_DOCUMENTS)

        cap_text = get(STALE_PASSKEY_REMOVAL_MAX_PER_RUN) or str(DEFAULT_STALE_PASSKEY_REMOVAL_MAX_PER_RUN)
        if not (cap_text.isascii() and cap_text.isdigit() and len(cap_text) <= 9):
            raise ConfigError(f"setting {STALE_PASSKEY_REMOVAL_MAX_PER_RUN} is malformed: expected a whole number "
                              "of passkeys, 0 or more")

        client_state = get(NOTIFICATION_CLIENT_STATE)
        if client_state is not None and len(client_state) > 128:
            raise ConfigError(f"setting {NOTIFICATION_CLIENT_STATE} is too long: Graph allows 128 characters")

        policy = Path(get(POLICY_FILE) or DEFAULT_POLICY_FILE)
        if not policy.is_absolute():
            policy = (base_dir or Path(__file__).resolve().parent.parent) / policy

        return cls(
            tenant_id=tenant.lower(),
            storage=storage,
            graph_base_url=graph.rstrip("/"),
            graph_dev_token=get(GRAPH_DEV_TOKEN) or "dev",
            azure_client_id=get(AZURE_CLIENT_ID),
            policy_file=policy,
            enforcement_mode=mode,
            notification_url=get(NOTIFICATION_URL),
            lifecycle_notification_url=get(LIFECYCLE_NOTIFICATION_URL),
            notification_client_state=client_state,
            ticket_webhook_secret=get(TICKET_WEBHOOK_SECRET),
            remove_stale_passkeys=remove,
            stale_passkey_removal_max_per_run=int(cap_text),
            allow_adhoc_documents=adhoc,
            auth_enabled=(get(WEBSITE_AUTH_ENABLED) or "").lower() == "true",
        )


#: Reads one setting: its stripped value, or None when unset or blank.
_Getter = Callable[[str], str | None]


def _tenant_id(get: _Getter) -> str:
    tenant = get(TENANT_ID)
    if tenant is None:
        raise ConfigError(f"setting {TENANT_ID} is missing: set it to the Entra tenant id (a GUID)")
    if not is_guid(tenant):
        raise ConfigError(f"setting {TENANT_ID} is malformed: expected a GUID, got {len(tenant)} characters")
    return tenant


def _graph_base_url(get: _Getter) -> str:
    graph = get(GRAPH_BASE_URL) or DEFAULT_GRAPH_BASE_URL
    parsed = urlparse(graph)
    if parsed.scheme not in ("https", "http") or not parsed.hostname:
        raise ConfigError(f"setting {GRAPH_BASE_URL} is malformed: expected an absolute URL")
    if parsed.scheme == "http" and not is_loopback_url(graph):
        raise ConfigError(f"setting {GRAPH_BASE_URL} must use https (plain http only on loopback)")
    return graph


def _storage(get: _Getter) -> StorageSettings:
    storage = StorageSettings(
        connection_string=get(STATE_STORAGE),
        table_uri=get(STATE_STORAGE_TABLE_URI),
        queue_uri=get(STATE_STORAGE_QUEUE_URI),
        client_id=get(STATE_STORAGE_CLIENT_ID),
    )
    if storage.connection_string is None and storage.table_uri is None:
        raise ConfigError(f"setting {STATE_STORAGE} is missing: set a connection string, or "
                          f"{STATE_STORAGE_TABLE_URI} and {STATE_STORAGE_QUEUE_URI} for a managed identity")
    if storage.connection_string is None and storage.queue_uri is None:
        raise ConfigError(f"setting {STATE_STORAGE_QUEUE_URI} is missing (needed with {STATE_STORAGE_TABLE_URI})")
    return storage


def _switch(get: _Getter, name: str) -> bool:
    """An on/off setting (false when unset): true/false, 1/0 or yes/no, in any case."""
    value = (get(name) or "false").lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise ConfigError(f"setting {name} is malformed: expected true or false")
    return value in ("true", "1", "yes")
