"""The token-credential path (Azure's `allowSharedKeyAccess: false`): Azurite over HTTPS with
`--oauth basic`, service URIs plus a fake AsyncTokenCredential, no connection string."""
from __future__ import annotations

import base64
import json

import pytest

from devhost.azurite import AsyncDevStorageCredential, Azurite, DevStorageCredential
from shared.config import Settings, StorageSettings
from shared.state import StateAuthError, StateStore, StateUnavailable
from tests.state.conftest import make_flag

TENANT = "8d3f2c1a-0000-4000-8000-00000000abcd"


def identity_settings(az: Azurite) -> StorageSettings:
    return StorageSettings(table_uri=az.table_url, queue_uri=az.queue_url, client_id="not-used-in-tests")


async def test_store_with_token_credential_writes_and_reads_a_flag(azurite_oauth: Azurite) -> None:
    """Over HTTPS with a Bearer token, a flag and a queue message round-trip, and the token asked for Storage."""
    credential = AsyncDevStorageCredential()
    settings = Settings.from_env({"TENANT_ID": TENANT, "STATE_STORAGE__tableServiceUri": azurite_oauth.table_url,
                                  "STATE_STORAGE__queueServiceUri": azurite_oauth.queue_url})
    assert settings.storage.uses_identity
    store = StateStore.from_settings(settings, credential=credential, connection_verify=str(azurite_oauth.cert_path),
                                     retry_total=0)
    try:
        assert await store.create_flags(TENANT, [make_flag("u1")]) == ["u1"]
        got = await store.get_flag(TENANT, "u1")
        assert got is not None and got.flag.new_upn == "u1@new.example"
        await store.queue.send([{"tenant": TENANT, "user_ids": ["u1"]}])
        assert await store.queue.peek_count() >= 1
        assert await store.ping() is True
    finally:
        await store.close()
    assert credential.scopes_seen and all(s[0].startswith("https://storage.azure.com") for s in credential.scopes_seen)


async def test_wrong_audience_is_a_clear_auth_error(azurite_oauth: Azurite) -> None:
    """A token for another audience gets StateAuthError (a StateError naming credentials), and ping is False."""
    credential = AsyncDevStorageCredential(audience="https://graph.microsoft.com")
    store = StateStore(identity_settings(azurite_oauth), tenant_id=TENANT, credential=credential,
                       connection_verify=str(azurite_oauth.cert_path), retry_total=0)
    try:
        with pytest.raises(StateAuthError) as caught:
            await store.get_flag(TENANT, "u1")
        assert "credentials" in caught.value.message and caught.value.detail == {
            "status": 403, "storageCode": "AuthenticationFailed"}
        assert await store.ping() is False
    finally:
        await store.close()


async def test_connection_string_over_https_needs_the_dev_certificate(azurite_oauth: Azurite) -> None:
    """With `connection_verify=cert.pem` TLS works; without it the self-signed cert fails as StateUnavailable."""
    store = StateStore(StorageSettings(connection_string=azurite_oauth.connection_string), tenant_id=TENANT,
                       connection_verify=str(azurite_oauth.cert_path), retry_total=0)
    try:
        assert await store.claim_event(TENANT, "tls-event", 60) is True
    finally:
        await store.close()
    unverified = StateStore(StorageSettings(connection_string=azurite_oauth.connection_string), tenant_id=TENANT,
                            retry_total=0)
    try:
        with pytest.raises(StateUnavailable):
            await unverified.claim_event(TENANT, "tls-event-2", 60)
    finally:
        await unverified.close()


def test_dev_credential_issues_an_unsigned_storage_jwt() -> None:
    """The sync credential's token is an alg=none JWT with Storage audience, an STS issuer and a future expiry."""
    token = DevStorageCredential(tenant_id=TENANT).get_token("https://storage.azure.com/.default")
    header_b64, claims_b64, signature = token.token.split(".")
    header = json.loads(base64.urlsafe_b64decode(header_b64 + "=="))
    claims = json.loads(base64.urlsafe_b64decode(claims_b64 + "=="))
    assert header["alg"] == "none" and signature == ""
    assert claims["aud"] == "https://storage.azure.com"
    assert claims["iss"] == f"https://sts.windows.net/{TENANT}/"
    assert claims["nbf"] <= claims["iat"] < claims["exp"] == token.expires_on


async def test_managed_identity_store_never_creates_tables_or_queues() -> None:
    """In Azure the template creates tables and queues; the app's scoped roles could not, so it never tries."""
    from shared.config import StorageSettings
    from shared.state import StateStore

    store = StateStore(StorageSettings(table_uri="https://127.0.0.1:9/devstoreaccount1",
                                       queue_uri="https://127.0.0.1:9/devstoreaccount1", client_id="cid"),
                       tenant_id=TENANT)
    await store.ensure()  # nothing listens on port 9: any create call would fail
    await store.queue.ensure()
    await store.close()
