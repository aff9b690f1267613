"""A private Azurite for tests, benchmarks and the demo: free loopback ports, started and stopped by PID.

Why not `UseDevelopmentStorage=true` on the default ports: parallel test sessions, a stale instance left
by a crashed run, or a developer's own Azurite would all answer on 10000-10002 and tests would pass or
fail against the wrong process. So each `start_azurite()` binds three free ports on 127.0.0.1, starts the
binary itself with `subprocess.Popen` (its PID is node, not a shell), and is ready only when all three
ports answer *and* that PID is still alive.

The token path (`oauth=True`) serves HTTPS with a self-signed certificate made here and accepts any
unsigned JWT whose audience is Storage (`--oauth basic`): `DevStorageCredential` produces one, so the
identity-based code path (`allowSharedKeyAccess: false` in Azure) runs offline.

Usage::

    with start_azurite() as az:
        store = StateStore(StorageSettings(connection_string=az.connection_string), tenant_id=settings.tenant_id)
"""
from __future__ import annotations

import atexit
import base64
import datetime as dt
import ipaddress
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
import weakref
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

from azure.core.credentials import AccessToken, AccessTokenInfo

log = logging.getLogger(__name__)

#: The emulator's well-known account and key (public, documented by Microsoft; not a secret).
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
HOST = "127.0.0.1"
#: Where the lead's Makefile installs Azurite with npm; `AZURITE_BIN` overrides it.
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BINARY = REPO_ROOT / "tools" / "node_modules" / ".bin" / "azurite"
READY_TIMEOUT = 90.0  # bounds a failure only: a loaded machine starts node slowly
STOP_TIMEOUT = 10.0
STORAGE_AUDIENCE = "https://storage.azure.com"
DEV_TENANT_ID = "00000000-0000-0000-0000-0000000000a1"

_LOG_TAIL_BYTES = 4000


class AzuriteError(RuntimeError):
    """Azurite is missing, could not start, or did not become ready; the message carries the log tail."""


class Ports(NamedTuple):
    """The three loopback ports one Azurite instance listens on."""

    blob: int
    queue: int
    table: int


def azurite_binary() -> Path:
    """The Azurite executable: `AZURITE_BIN`, else the repo's npm install; a clear error when absent."""
    configured = os.environ.get("AZURITE_BIN")
    path = Path(configured) if configured else DEFAULT_BINARY
    if not path.exists():
        where = f"AZURITE_BIN={configured}" if configured else str(DEFAULT_BINARY)
        raise AzuriteError(f"Azurite not found at {where}: run `make` in {REPO_ROOT} (it installs Azurite "
                           "3.35 with npm into tools/node_modules), or set AZURITE_BIN to an azurite binary")
    return path


def _reserve_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (all held open together so they differ, then released)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_is_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:`port` (TIME_WAIT leftovers don't count, as for node)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def _port_answers(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


def make_self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """Write `cert.pem` and `key.pem` (EC P-256, SAN IP:127.0.0.1 and DNS:localhost) into `directory`.

    The certificate is its own CA, so clients pass its path as `connection_verify` / `cafile`.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Passkey Guard dev Azurite")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


_RUNNING: weakref.WeakSet[Azurite] = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    """Stop any instance a crashed test forgot, so no Azurite outlives the Python process that made it."""
    for instance in list(_RUNNING):
        instance.stop()


class Azurite:
    """One Azurite process on fixed loopback ports; `stop()` / `restart()` act on its PID only."""

    def __init__(self, *, binary: Path, ports: Ports, workdir: Path, owns_workdir: bool,
                 location: Path | None, https: bool, oauth: bool) -> None:
        self.binary = binary
        self.ports = ports
        self.workdir = workdir
        self.location = location
        self.https = https or oauth
        self.oauth = oauth
        self._owns_workdir = owns_workdir
        self._proc: subprocess.Popen[bytes] | None = None
        self.cert_path: Path | None = None
        self.key_path: Path | None = None
        self.log_path = workdir / "azurite.log"

    # --- addresses -------------------------------------------------------------------------------
    @property
    def scheme(self) -> str:
        return "https" if self.https else "http"

    @property
    def blob_url(self) -> str:
        return f"{self.scheme}://{HOST}:{self.ports.blob}/{ACCOUNT_NAME}"

    @property
    def queue_url(self) -> str:
        return f"{self.scheme}://{HOST}:{self.ports.queue}/{ACCOUNT_NAME}"

    @property
    def table_url(self) -> str:
        return f"{self.scheme}://{HOST}:{self.ports.table}/{ACCOUNT_NAME}"

    @property
    def connection_string(self) -> str:
        """The full shared-key connection string for these ports (custom ports need explicit endpoints)."""
        return (f"DefaultEndpointsProtocol={self.scheme};AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
                f"BlobEndpoint={self.blob_url};QueueEndpoint={self.queue_url};TableEndpoint={self.table_url};")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def alive(self) -> bool:
        """True while our process runs (a port answering alone could be somebody else's instance)."""
        return self._proc is not None and self._proc.poll() is None

    # --- lifecycle -------------------------------------------------------------------------------
    def _command(self) -> list[str]:
        cmd = [str(self.binary), "--silent", "--disableTelemetry", "--skipApiVersionCheck",
               "--blobHost", HOST, "--blobPort", str(self.ports.blob),
               "--queueHost", HOST, "--queuePort", str(self.ports.queue),
               "--tableHost", HOST, "--tablePort", str(self.ports.table)]
        if self.location is None:
            cmd.append("--inMemoryPersistence")
        else:
            cmd += ["--location", str(self.location)]
        if self.https:
            assert self.cert_path is not None and self.key_path is not None
            cmd += ["--cert", str(self.cert_path), "--key", str(self.key_path)]
        if self.oauth:
            cmd += ["--oauth", "basic"]
        return cmd

    def log_tail(self) -> str:
        """The end of Azurite's log file, for error messages."""
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - _LOG_TAIL_BYTES))
                return fh.read().decode("utf-8", "replace").strip()
        except OSError:
            return ""

    def start(self, timeout: float = READY_TIMEOUT) -> None:
        """Start the process on `self.ports` and wait until it is ready; AzuriteError otherwise."""
        if self.alive():
            raise AzuriteError(f"Azurite already running (pid {self.pid})")
        taken = [p for p in self.ports if not port_is_free(p)]
        if taken:
            raise AzuriteError(f"refusing to start Azurite: port(s) {taken} on {HOST} are in use "
                               "(a stale instance?)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.location is not None:
            self.location.mkdir(parents=True, exist_ok=True)
        if self.https and (self.cert_path is None or not self.cert_path.exists()):
            self.cert_path, self.key_path = make_self_signed_cert(self.workdir)
        with self.log_path.open("ab") as logfile:
            logfile.write(f"--- starting {' '.join(self._command()[1:])}\n".encode())
            logfile.flush()
            self._proc = subprocess.Popen(self._command(), cwd=self.workdir, stdin=subprocess.DEVNULL,
                                          stdout=logfile, stderr=subprocess.STDOUT)
        _RUNNING.add(self)
        started = time.monotonic()
        deadline = started + timeout
        while True:
            if not self.alive():
                code = self._proc.returncode
                self._proc = None
                raise AzuriteError(f"Azurite exited during startup (code {code}); log tail:\n{self.log_tail()}")
            if all(_port_answers(p) for p in self.ports):
                break
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self._terminate()
                raise AzuriteError(f"Azurite not ready on ports {tuple(self.ports)} after {timeout:.0f} s; "
                                   f"log tail:\n{tail}")
            time.sleep(0.05)
        log.info("Azurite ready: pid %s, ports %s, %.2f s", self.pid, tuple(self.ports),
                 time.monotonic() - started)

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                log.warning("Azurite pid %s ignored SIGTERM; killing it", proc.pid)
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT)
        _RUNNING.discard(self)
        deadline = time.monotonic() + STOP_TIMEOUT
        while not all(port_is_free(p) for p in self.ports) and time.monotonic() < deadline:
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL our process (a crash, for fault tests); ports are free again when this returns."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        self._terminate()

    def stop(self) -> None:
        """SIGTERM our PID, wait (SIGKILL if it hangs), wait for the ports, remove a temporary workdir."""
        self._terminate()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def restart(self, timeout: float = READY_TIMEOUT) -> None:
        """Stop and start again on the same ports and location (in-memory data is lost, `location` kept)."""
        self._terminate()
        self.start(timeout)

    def __enter__(self) -> Azurite:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Azurite(pid={self.pid}, ports={tuple(self.ports)}, https={self.https}, oauth={self.oauth})"


def start_azurite(*, location: Path | None = None, https: bool = False, oauth: bool = False,
                  workdir: Path | None = None, timeout: float = READY_TIMEOUT) -> Azurite:
    """Start a private Azurite on three free loopback ports and return it once ready.

    `location` persists data on disk (it survives `restart()`); otherwise data lives in memory.
    `oauth=True` implies HTTPS with a generated certificate (`.cert_path`) and accepts Bearer tokens
    from `DevStorageCredential`. `workdir` holds the log and certificate (a temporary directory, removed
    on `stop()`, when not given).
    """
    binary = azurite_binary()
    owns = workdir is None
    work = Path(tempfile.mkdtemp(prefix="azurite-")) if workdir is None else Path(workdir)
    last_error: AzuriteError | None = None
    for _attempt in range(3):  # a free port can be taken between our probe and Azurite's bind
        instance = Azurite(binary=binary, ports=Ports(*_reserve_ports(3)), workdir=work, owns_workdir=owns,
                           location=Path(location) if location is not None else None, https=https, oauth=oauth)
        try:
            instance.start(timeout)
            return instance
        except AzuriteError as exc:
            last_error = exc
            if "EADDRINUSE" not in str(exc) and "in use" not in str(exc):
                break
    if owns:
        shutil.rmtree(work, ignore_errors=True)
    assert last_error is not None
    raise last_error


# --- a fake credential for the token path ------------------------------------------------------------
def _b64url(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def make_dev_token(*, tenant_id: str = DEV_TENANT_ID, audience: str = STORAGE_AUDIENCE,
                   lifetime: int = 3600, now: int | None = None) -> tuple[str, int]:
    """An unsigned JWT (`alg: none`) as Azurite's `--oauth basic` expects, and its expiry (epoch seconds)."""
    issued = int(time.time()) if now is None else now
    expires = issued + lifetime
    claims = {
        "aud": audience, "iss": f"https://sts.windows.net/{tenant_id}/", "tid": tenant_id,
        "iat": issued - 60, "nbf": issued - 60, "exp": expires,
        "oid": str(uuid.UUID(int=1)), "sub": "passkey-guard-dev", "appid": str(uuid.UUID(int=2)),
        "idtyp": "app", "ver": "1.0",
    }
    return f"{_b64url({'alg': 'none', 'typ': 'JWT'})}.{_b64url(claims)}.", expires


class DevStorageCredential:
    """A `TokenCredential` for Azurite's token path: unsigned JWTs, never a real token (tests only).

    `audience` lets a test send a wrong one; `scopes_seen` records what the SDK asked for.
    """

    def __init__(self, *, tenant_id: str = DEV_TENANT_ID, audience: str = STORAGE_AUDIENCE,
                 lifetime: int = 3600) -> None:
        self.tenant_id, self.audience, self.lifetime = tenant_id, audience, lifetime
        self.scopes_seen: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, claims: str | None = None, tenant_id: str | None = None,
                  enable_cae: bool = False, **kwargs: Any) -> AccessToken:
        """A fresh unsigned token for `self.audience` (the scopes are recorded, not used)."""
        self.scopes_seen.append(scopes)
        token, expires = make_dev_token(tenant_id=self.tenant_id, audience=self.audience, lifetime=self.lifetime)
        return AccessToken(token, expires)

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        """The `SupportsTokenInfo` form of `get_token`."""
        token = self.get_token(*scopes)
        return AccessTokenInfo(token.token, token.expires_on)

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> DevStorageCredential:
        return self

    def __exit__(self, *args: object) -> None:
        self.close()


class AsyncDevStorageCredential:
    """The `AsyncTokenCredential` twin of `DevStorageCredential` (for the `.aio` clients)."""

    def __init__(self, *, tenant_id: str = DEV_TENANT_ID, audience: str = STORAGE_AUDIENCE,
                 lifetime: int = 3600) -> None:
        self._sync = DevStorageCredential(tenant_id=tenant_id, audience=audience, lifetime=lifetime)

    @property
    def scopes_seen(self) -> list[tuple[str, ...]]:
        return self._sync.scopes_seen

    async def get_token(self, *scopes: str, claims: str | None = None, tenant_id: str | None = None,
                        enable_cae: bool = False, **kwargs: Any) -> AccessToken:
        """A fresh unsigned token for the configured audience."""
        return self._sync.get_token(*scopes)

    async def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        """The `AsyncSupportsTokenInfo` form of `get_token`."""
        return self._sync.get_token_info(*scopes)

    async def close(self) -> None:
        """Nothing to release."""

    async def __aenter__(self) -> AsyncDevStorageCredential:
        return self

    async def __aexit__(self, *args: object) -> None:
        await self.close()
