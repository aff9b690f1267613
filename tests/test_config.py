"""Settings: read once from a mapping, with errors that name the setting."""
from __future__ import annotations

import pytest

from shared.config import Settings, is_loopback_url
from shared.errors import ConfigError

TENANT = "11111111-2222-4333-8444-555555555555"
BASE = {"TENANT_ID": TENANT, "STATE_STORAGE": "UseDevelopmentStorage=true"}


def test_defaults_follow_the_handbook():
    """Graph v1.0 on graph.microsoft.com and audit mode are the defaults."""
    s = Settings.from_env(BASE)
    assert s.graph_base_url == "https://graph.microsoft.com/v1.0"
    assert s.enforcement_mode == "audit" and s.remove_stale_passkeys is False
    assert not s.graph_is_local


@pytest.mark.parametrize(("env", "named"), [
    ({"STATE_STORAGE": "x"}, "TENANT_ID"),
    ({"TENANT_ID": "not-a-guid", "STATE_STORAGE": "x"}, "TENANT_ID"),
    ({"TENANT_ID": TENANT}, "STATE_STORAGE"),
    ({**BASE, "ENFORCEMENT_MODE": "yolo"}, "ENFORCEMENT_MODE"),
    ({**BASE, "GRAPH_BASE_URL": "http://graph.example.com/v1.0"}, "GRAPH_BASE_URL"),
    ({**BASE, "GRAPH_BASE_URL": "nonsense"}, "GRAPH_BASE_URL"),
    ({**BASE, "REMOVE_STALE_PASSKEYS": "maybe"}, "REMOVE_STALE_PASSKEYS"),
    ({**BASE, "NOTIFICATION_CLIENT_STATE": "x" * 129}, "NOTIFICATION_CLIENT_STATE"),
    ({"TENANT_ID": TENANT, "STATE_STORAGE__tableServiceUri": "https://a.table.core.windows.net"},
     "STATE_STORAGE__queueServiceUri"),
])
def test_bad_settings_name_the_setting(env, named):
    """A missing or malformed setting is a ConfigError whose message names it."""
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert named in str(info.value)


def test_identity_based_storage_is_accepted():
    """In Azure, storage is reached by URI and managed identity, with no connection string."""
    s = Settings.from_env({"TENANT_ID": TENANT.upper(),
                           "STATE_STORAGE__tableServiceUri": "https://a.table.core.windows.net",
                           "STATE_STORAGE__queueServiceUri": "https://a.queue.core.windows.net",
                           "STATE_STORAGE__clientId": "cid"})
    assert s.storage.uses_identity and s.storage.client_id == "cid"
    assert s.tenant_id == TENANT  # normalised to lower case: it starts every storage key


def test_loopback_graph_uses_the_dev_token():
    """A loopback GRAPH_BASE_URL may be plain http and is treated as the local simulator."""
    s = Settings.from_env({**BASE, "GRAPH_BASE_URL": "http://127.0.0.1:8400/v1.0/", "GRAPH_DEV_TOKEN": "t"})
    assert s.graph_is_local and s.graph_dev_token == "t" and s.graph_base_url.endswith("/v1.0")
    assert is_loopback_url("http://localhost:1/x") and is_loopback_url("http://[::1]:1/")
    assert not is_loopback_url("https://graph.microsoft.com/v1.0")


def test_settings_are_frozen():
    """Nobody changes settings after they are read."""
    s = Settings.from_env(BASE)
    with pytest.raises(AttributeError):
        s.tenant_id = "x"  # type: ignore[misc]


@pytest.mark.parametrize("value", ["-1", "ten", "2.5", "１２", "1e3", "9999999999"])
def test_a_malformed_removal_cap_names_its_setting(value):
    """STALE_PASSKEY_REMOVAL_MAX_PER_RUN must be a whole number of 0 or more; anything else names the setting."""
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**BASE, "STALE_PASSKEY_REMOVAL_MAX_PER_RUN": value})
    assert "STALE_PASSKEY_REMOVAL_MAX_PER_RUN" in str(info.value)


def test_the_removal_cap_defaults_to_25_and_may_be_0():
    """Default 25 passkeys a tracker run; 0 sends every removal to an administrator for approval."""
    assert Settings.from_env(BASE).stale_passkey_removal_max_per_run == 25
    assert Settings.from_env({**BASE, "STALE_PASSKEY_REMOVAL_MAX_PER_RUN": "0"}).stale_passkey_removal_max_per_run == 0


GOOD_STATE = "p8Vq1zR4tW7yB0cE3fH6jK9mN2sU5xA8dG1"  # 35 random-looking characters
GOOD_TICKET = "Lr2Ty5Ui8Op1As4Df7Gh0Jk3Zx6Cv9Bn2Mq5"


@pytest.mark.parametrize(("value", "reason"), [
    ("@Microsoft.KeyVault(VaultName=kv-abc;SecretName=graph-client-state)", "keyVaultReferenceUnresolved"),
    ("@microsoft.keyvault(SecretUri=https://kv-abc.vault.azure.net/secrets/graph-client-state/)",
     "keyVaultReferenceUnresolved"),
    ("  @MICROSOFT.KEYVAULT(VaultName=kv;SecretName=s)  ", "keyVaultReferenceUnresolved"),
    ("test-client-state", "tooShort"),
    ("x" * 31, "tooShort"),
    ("<random string, at most 128 characters>", "placeholder"),
    ("<random string shared with the ticketing system>", "placeholder"),
    ("<secret>", "placeholder"),
    (" ChangeMe ", "placeholder"),
])
def test_unusable_secret_settings_are_unavailable(value, reason):
    """A Key Vault reference App Service could not resolve, a short value or a placeholder counts as missing."""
    s = Settings.from_env({**BASE, "NOTIFICATION_CLIENT_STATE": value, "TICKET_WEBHOOK_SECRET": value})
    assert s.unavailable_secrets() == {"NOTIFICATION_CLIENT_STATE": reason, "TICKET_WEBHOOK_SECRET": reason}


def test_usable_and_missing_secrets():
    """Random 32+ character values are usable; an unset secret is reported as missing."""
    s = Settings.from_env({**BASE, "NOTIFICATION_CLIENT_STATE": GOOD_STATE})
    assert s.unavailable_secrets() == {"TICKET_WEBHOOK_SECRET": "missing"}
    assert s.secret("notification_client_state") == GOOD_STATE
    both = Settings.from_env({**BASE, "NOTIFICATION_CLIENT_STATE": GOOD_STATE, "TICKET_WEBHOOK_SECRET": GOOD_TICKET})
    assert both.unavailable_secrets() == {}


def test_an_unavailable_secret_is_refused_by_name_without_its_value():
    """Asking for an unusable secret raises SecretUnavailable (503 secretUnavailable) naming the setting only."""
    from shared.errors import SecretUnavailable

    reference = "@Microsoft.KeyVault(VaultName=kv-abc;SecretName=ticket-webhook-secret)"
    s = Settings.from_env({**BASE, "TICKET_WEBHOOK_SECRET": reference})
    with pytest.raises(SecretUnavailable) as info:
        s.secret("ticket_webhook_secret")
    assert info.value.status == 503 and info.value.code == "secretUnavailable"
    assert "TICKET_WEBHOOK_SECRET" in info.value.message and "keyVaultReferenceUnresolved" in info.value.message
    assert "kv-abc" not in str(info.value.to_body()) and reference not in info.value.message


@pytest.mark.parametrize(("value", "enabled"), [(None, False), ("True", True), ("true", True), ("False", False),
                                                ("1", False), ("", False)])
def test_platform_authentication_is_read_from_website_auth_enabled(value, enabled):
    """WEBSITE_AUTH_ENABLED (set by App Service, not by us) turns on trust in the principal header only
    when it is exactly true; anything else keeps the admin routes closed."""
    env = dict(BASE) if value is None else {**BASE, "WEBSITE_AUTH_ENABLED": value}
    assert Settings.from_env(env).auth_enabled is enabled


def test_website_auth_enabled_is_a_platform_setting_not_an_app_setting():
    """The code reads WEBSITE_AUTH_ENABLED, but it is App Service's: listed as a platform setting, never
    as an app setting infra would write."""
    from shared import config

    assert config.WEBSITE_AUTH_ENABLED in config.PLATFORM_SETTINGS
    assert config.WEBSITE_AUTH_ENABLED not in config.APP_SETTINGS
