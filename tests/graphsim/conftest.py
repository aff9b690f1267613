"""Fixtures for the Graph simulator tests: a simulator process per module, one SDK client per session.

The SDK client is wired as graph-contract.md pitfall 10 and local-stack.md say: a static bearer token
for 127.0.0.1 only, `GraphRequestAdapter` without a custom httpx client, `base_url` pointed at the
module's simulator. Fast tests switch the SDK's retries off with `no_retry()`. Tests of time windows
(throttle buckets, the CA limit) freeze the simulator's throttle clock with `frozen_throttle_clock` and
move it by hand, or let the SDK's retry sleep move it (`sdk_backoff_moves_the_clock`), and tests of
notifications wait on conditions (`Receiver.wait_until`): none depends on how fast the machine is.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from kiota_abstractions.authentication import AccessTokenProvider, AllowedHostsValidator
from kiota_abstractions.authentication.base_bearer_token_authentication_provider import (
    BaseBearerTokenAuthenticationProvider,
)
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_http.middleware import retry_handler
from kiota_http.middleware.options import RetryHandlerOption
from msgraph import GraphRequestAdapter, GraphServiceClient

from graphsim.launcher import Simulator, start_simulator

YUBI = "cb69481e-8ff7-4039-93ec-0a2729a154a8"
ANDROID = "de1e552d-db1d-4423-a619-566b625cdc84"
IOS = "90a3ccdf-635c-4729-a248-9b709135078f"
FEITIAN = "12ded745-4bed-47d4-abaa-e713f51d6393"
FIDO2_TYPE = "#microsoft.graph.fido2AuthenticationMethodConfiguration"
PROFILE_ID = "00000000-0000-0000-0000-000000000001"
TOKEN = "sim-token"
FAST = {"ca_requests_per_second": 1000.0, "notify_batch_window_s": 0.05, "batch_shuffle_responses": True}


def no_retry() -> RequestConfiguration[Any]:
    """A request configuration with the SDK's retry handler switched off."""
    return RequestConfiguration(options=[RetryHandlerOption(max_retries=0)])


class StaticTokenProvider(AccessTokenProvider):
    """Hands out a fixed token to allowed hosts only (tests never hold a real credential)."""

    def __init__(self, token: str, hosts: tuple[str, ...] | list[str] = ()) -> None:
        self._token, self._v = token, AllowedHostsValidator(list(hosts))

    async def get_authorization_token(self, uri: str, additional_authentication_context: dict[str, Any] | None
                                      = None) -> str:
        """The token when the URI's host is allowed, else an empty string (no header)."""
        return self._token if self._v.is_url_host_valid(uri) else ""

    def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
        """The validator built from `hosts`."""
        return self._v


def user(n: int, *, key: str | None = None, domain: str = "contoso.example", **extra: Any) -> dict[str, Any]:
    """A tenant-file user numbered `n`, with one passkey of AAGUID `key` when given."""
    doc: dict[str, Any] = {"id": f"{n:08d}-aaaa-4bbb-8ccc-000000000000", "userPrincipalName": f"user{n}@{domain}",
                           "displayName": f"User {n}", "accountEnabled": True, **extra}
    if key:
        doc["authentication"] = {"fido2Methods": [{
            "id": f"key{n}AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA0", "displayName": "Security key", "aaGuid": key,
            "model": "YubiKey 5 NFC", "createdDateTime": "2025-05-01T08:00:00Z", "attestationLevel": "attested",
            "passkeyType": "deviceBound"}]}
    return doc


def uid(n: int) -> str:
    """The id `user(n)` gets."""
    return f"{n:08d}-aaaa-4bbb-8ccc-000000000000"


def base_tenant(n_users: int = 30, **extra: Any) -> dict[str, Any]:
    """A small tenant: users (every third with a YubiKey), a security group, a M365 group, profiles-shape fido2."""
    doc: dict[str, Any] = {
        "users": [user(n, key=YUBI if n % 3 == 0 else None) for n in range(1, n_users + 1)],
        "groups": [{"id": "99999999-0000-4000-8000-000000000001", "displayName": "Pilot", "securityEnabled": True,
                    "mailEnabled": False, "groupTypes": []},
                   {"id": "99999999-0000-4000-8000-000000000002", "displayName": "Marketing",
                    "securityEnabled": False, "mailEnabled": True, "groupTypes": ["Unified"]}],
        "authenticationMethodConfigurations": {"fido2": {
            "@odata.type": FIDO2_TYPE, "id": "Fido2", "state": "enabled", "isSelfServiceRegistrationAllowed": True,
            "isAttestationEnforced": False,
            "keyRestrictions": {"isEnforced": True, "enforcementType": "allow", "aaGuids": [YUBI]},
            "defaultPasskeyProfile": PROFILE_ID,
            "passkeyProfiles": [{"id": PROFILE_ID, "name": "Default passkey profile",
                                 "passkeyTypes": "deviceBound,synced", "attestationEnforcement": "disabled",
                                 "keyRestrictions": {"isEnforced": True, "enforcementType": "allow",
                                                     "aaGuids": [YUBI]}}],
            "includeTargets": [{"targetType": "group", "id": "all_users", "isRegistrationRequired": False,
                                "allowedPasskeyProfiles": [PROFILE_ID]}],
            "excludeTargets": []}},
        "authenticationStrengthPolicies": [
            {"id": "cccccccc-0000-4000-8000-000000000001", "displayName": "Legacy combo", "policyType": "custom",
             "requirementsSatisfied": "mfa", "allowedCombinations": ["password,sms", "fido2"],
             "combinationConfigurations": []}],
        "conditionalAccessPolicies": [],
        "simulator": dict(FAST),
    }
    doc.update(extra)
    return doc


@dataclass
class Raw:
    """One raw HTTP answer."""

    status: int
    headers: Any
    body: Any


def raw(sim: Simulator, method: str, path: str, body: Any = None, *, token: str | None = TOKEN,
        headers: dict[str, str] | None = None) -> Raw:
    """A plain HTTP call to the simulator (for what the SDK cannot show: headers, envelopes, control paths)."""
    url = path if path.startswith("http") else sim.base_url + path
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)  # noqa: S310 (loopback)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
            payload = resp.read()
            return Raw(resp.status, resp.headers, json.loads(payload) if payload.strip() else None)
    except urllib.error.HTTPError as exc:
        payload = exc.read()
        return Raw(exc.code, exc.headers, json.loads(payload) if payload.strip() else None)


async def araw(sim: Simulator, method: str, path: str, body: Any = None, **kw: Any) -> Raw:
    """`raw` off the event loop, so a receiver served by this loop can answer meanwhile."""
    return await asyncio.to_thread(raw, sim, method, path, body, **kw)


@pytest.fixture(scope="session")
def graph_client() -> GraphServiceClient:
    """One SDK client for the whole session; each module points it at its own simulator."""
    auth = BaseBearerTokenAuthenticationProvider(StaticTokenProvider(TOKEN, hosts=["127.0.0.1"]))
    adapter = GraphRequestAdapter(auth)
    adapter.base_url = "http://127.0.0.1:9/v1.0"
    return GraphServiceClient(request_adapter=adapter)


@contextlib.contextmanager
def frozen_throttle_clock(sim: Simulator, *, past: float = 0.0) -> Iterator[None]:
    """Freeze the simulator's throttle clock (moved `past` seconds on first, beyond any earlier call), so
    buckets and the CA window only change when a test moves the clock, never with the machine's speed."""
    sim.throttle_clock(frozen=True, advance=past)
    try:
        yield
    finally:
        sim.throttle_clock(frozen=False)


def sdk_backoff_moves_the_clock(sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Make the SDK retry handler's sleep move the simulator's throttle clock instead of waiting; returns
    the list of the delays it asked for (a test of its backoff sees each one)."""
    slept: list[float] = []

    async def backoff(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.to_thread(sim.throttle_clock, advance=seconds)

    monkeypatch.setattr(retry_handler, "asyncio", SimpleNamespace(sleep=backoff))
    return slept


def start(tenant: dict[str, Any]) -> Iterator[Simulator]:
    """Run a simulator for the duration of a fixture."""
    sim = start_simulator(tenant)
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture(scope="module")
def client(sim: Simulator, graph_client: GraphServiceClient) -> GraphServiceClient:
    """The session client pointed at this module's simulator."""
    graph_client.request_adapter.base_url = sim.base_url
    return graph_client


@dataclass
class Receiver:
    """A loopback webhook: echoes validation tokens (unless told not to), answers notification POSTs with
    `status` and records the bodies it accepted."""

    url: str = ""
    echo: bool = True
    status: int = 202
    received: list[dict[str, Any]] = field(default_factory=list)   # bodies answered with 2xx
    rejected: int = 0                                                 # POSTs answered with `status` >= 300
    validations: list[str] = field(default_factory=list)
    delay: float = 0.0                                                # seconds before answering a notification

    def notifications(self, **match: Any) -> list[dict[str, Any]]:
        """Every notification item received whose fields equal `match`."""
        return [n for body in self.received for n in body.get("value", [])
                if all(n.get(k) == v for k, v in match.items())]

    async def wait_for(self, count: int = 1, within: float = 30.0, **match: Any) -> list[dict[str, Any]]:
        """Poll until `count` matching notifications arrived (or `within` seconds passed); returns them."""
        await self.wait_until(lambda: len(self.notifications(**match)) >= count, within=within, fail=False)
        return self.notifications(**match)

    async def wait_until(self, condition: Callable[[], bool], *, within: float = 30.0, fail: bool = True) -> None:
        """Poll `condition` until it holds; `within` seconds only bound a failure (an AssertionError when
        `fail`, else a plain return so the caller's own assertion says what is missing)."""
        deadline = time.monotonic() + within
        while not condition():
            if time.monotonic() > deadline:
                assert not fail, f"condition not met within {within} s"
                return
            await asyncio.sleep(0.02)


@pytest.fixture()
async def receiver() -> AsyncIterator[Receiver]:
    """A webhook receiver served by the test's event loop on a free loopback port."""
    rec = Receiver()

    async def handle(request: web.Request) -> web.Response:
        token = request.query.get("validationToken")
        if token is not None:
            rec.validations.append(token)
            if not rec.echo:
                return web.Response(status=500, text="")
            return web.Response(status=200, text=token, content_type="text/plain")
        body = json.loads(await request.read())
        if rec.delay:
            await asyncio.sleep(rec.delay)
        if rec.status < 300:
            rec.received.append(body)
        else:
            rec.rejected += 1
        return web.Response(status=rec.status)

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    rec.url = f"http://127.0.0.1:{port}/notify"
    yield rec
    await runner.cleanup()


def pytest_configure(config: pytest.Config) -> None:
    """The SDK's generated request builders warn on import; that noise says nothing about the simulator."""
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:msgraph.*")
