"""devhost.azurite: free ports, PID-based stop, restart on the same ports (with and without --location)."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from cryptography import x509

from devhost.azurite import (
    ACCOUNT_NAME,
    Azurite,
    AzuriteError,
    Ports,
    azurite_binary,
    make_self_signed_cert,
    port_is_free,
    start_azurite,
)
from shared.config import StorageSettings
from shared.errors import StateError
from shared.state import StateStore, StateUnavailable
from tests.state.conftest import make_flag

TENANT = "3b0e6c52-1111-4222-8333-444455556666"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_connection_string_names_our_ports_and_account(azurite: Azurite) -> None:
    """The session instance runs on three distinct free ports, and the connection string points at them."""
    assert azurite.alive() and azurite.pid is not None and pid_alive(azurite.pid)
    assert len(set(azurite.ports)) == 3
    cs = azurite.connection_string
    assert f"AccountName={ACCOUNT_NAME}" in cs
    for port, kind in zip(azurite.ports, ("Blob", "Queue", "Table"), strict=True):
        assert f"{kind}Endpoint=http://127.0.0.1:{port}/{ACCOUNT_NAME}" in cs
    assert azurite.table_url == f"http://127.0.0.1:{azurite.ports.table}/{ACCOUNT_NAME}"


async def test_restart_with_location_keeps_data_and_ports(tmp_path: Path) -> None:
    """With --location, data written before restart() is there afterwards, on the same ports, under a new PID."""
    with start_azurite(location=tmp_path / "data", workdir=tmp_path / "work") as az:
        store = StateStore(StorageSettings(connection_string=az.connection_string), tenant_id=TENANT, retry_total=0)
        try:
            await store.create_flags(TENANT, [make_flag("kept")])
            ports, pid = az.ports, az.pid
            az.restart()
            assert az.ports == ports and az.pid != pid and az.alive()
            assert pid is not None and not pid_alive(pid)
            kept = await store.get_flag(TENANT, "kept")
            assert kept is not None and kept.flag.new_upn == "kept@new.example"
        finally:
            await store.close()
        assert (tmp_path / "work" / "azurite.log").exists()
    assert all(port_is_free(p) for p in ports)


async def test_kill_then_restart_in_memory_loses_data_and_recovers(tmp_path: Path) -> None:
    """A killed Azurite gives StateUnavailable; after restart() the store recreates its tables by itself."""
    az = start_azurite()
    store = StateStore(StorageSettings(connection_string=az.connection_string), tenant_id=TENANT, retry_total=0)
    try:
        await store.create_flags(TENANT, [make_flag("lost")])
        az.kill()
        with pytest.raises(StateUnavailable):
            await store.get_flag(TENANT, "lost")
        az.restart()
        assert await store.get_flag(TENANT, "lost") is None
        assert await store.create_flags(TENANT, [make_flag("new")]) == ["new"]
    finally:
        await store.close()
        az.stop()
    assert not az.workdir.exists()
    assert not az.alive()


def test_stop_ends_our_pid_and_frees_ports() -> None:
    """stop() terminates exactly our process and releases all three ports."""
    az = start_azurite()
    pid, ports = az.pid, az.ports
    assert pid is not None and pid_alive(pid)
    az.stop()
    assert not pid_alive(pid)
    assert all(port_is_free(p) for p in ports)
    az.stop()  # idempotent


def test_refuses_to_start_when_a_port_is_taken(tmp_path: Path) -> None:
    """A port already listening (a stale instance) makes start() fail before spawning anything."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        az = Azurite(binary=azurite_binary(), ports=Ports(taken, taken + 1, taken + 2), workdir=tmp_path,
                     owns_workdir=False, location=None, https=False, oauth=False)
        with pytest.raises(AzuriteError, match="in use"):
            az.start()
        assert az.pid is None


def test_missing_binary_says_run_make(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the npm install, the error tells the developer to run `make`."""
    monkeypatch.setenv("AZURITE_BIN", str(tmp_path / "nope" / "azurite"))
    with pytest.raises(AzuriteError, match="run `make`"):
        start_azurite()


def test_self_signed_cert_covers_loopback(tmp_path: Path) -> None:
    """The generated certificate names IP 127.0.0.1 and DNS localhost, and its key is private to us."""
    cert_path, key_path = make_self_signed_cert(tmp_path)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert key_path.stat().st_mode & 0o077 == 0


def test_state_error_for_a_store_without_tables_or_uris() -> None:
    """Identity settings without a queue URI are refused up front (ConfigError, not a late StateError)."""
    from shared.errors import ConfigError

    with pytest.raises(ConfigError):
        StateStore(StorageSettings(table_uri="https://127.0.0.1:1/devstoreaccount1"), tenant_id=TENANT)
    assert not issubclass(ConfigError, StateError)
