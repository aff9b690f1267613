"""GraphGateway: msgraph-sdk with the base-URL override, error mapping, raw JSON reads and `$batch`.

Writes go through the SDK's typed models, built fresh for each request (never an object that came
from a GET: graph-contract pitfall 1). Reads that the SDK's models would lose or slow down (multi-value
`passkeyTypes`, multi-method `allowedCombinations`, delta pages, bulk `fido2Methods`) go through
`get_json`/`batch`, which use the *same* request adapter: same auth, retry handler and base URL.

The SDK's retry handler honours `Retry-After` on 429/503/504 for whole requests, a `$batch` envelope
included; `$batch` items are never retried by the SDK, so `batch_get` retries them itself, honouring each
item's `Retry-After`, and sends a whole envelope again when it is still refused after the SDK's retries.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from shared.config import Settings
from shared.errors import GraphError, GraphSignInFailed, GraphThrottled, GraphUnavailable, NotFound
from shared.graph.budget import CallPace, FixedPace, RuPace

if TYPE_CHECKING:
    from msgraph import GraphServiceClient

log = logging.getLogger(__name__)
T = TypeVar("T")
BATCH_LIMIT = 20  # Graph's $batch maximum
BATCH_TRANSPORT_RETRIES = 3  # $batch envelopes of reads re-sent after a dropped connection
BATCH_UNAVAILABLE_RETRIES = 3  # ... and after a 503/504 of the envelope, beyond the SDK's own retries
REPORTS_PER_10S = 5  # Graph's published limit for reports that list authentication methods, per app and tenant
BATCH_GET_MAX_SECONDS = 120.0  # a bulk read waiting its turn under Graph's limits starts no round after this


@dataclass
class BatchItem:
    """One response inside a `$batch` answer."""

    id: str
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def retry_after(self) -> float:
        try:
            return max(0.0, float(header(self.headers, "Retry-After") or 1))
        except ValueError:
            return 1.0

    @property
    def limit_percentage(self) -> float | None:
        """Graph's `x-ms-throttle-limit-percentage` on this answer (sent above 80 % of a limit), or None."""
        return limit_percentage(self.headers)

    @property
    def app_limit(self) -> bool:
        """A 429 of the app's own limit in this tenant (`x-ms-throttle-scope: Tenant_Application/...`, the RU
        bucket), rather than a limit of the tenant as a whole (`Tenant/...`) or an unstated one."""
        scope = header(self.headers, "x-ms-throttle-scope") or ""
        return scope.split("/", 1)[0].lower() == "tenant_application"


def header(headers: dict[str, str], name: str) -> str | None:
    """A header's value whatever the case of its name (a `$batch` item's headers keep Graph's), or None."""
    wanted = name.lower()
    return next((value for key, value in headers.items() if key.lower() == wanted), None)


def limit_percentage(headers: dict[str, str]) -> float | None:
    """The `x-ms-throttle-limit-percentage` header as a number, or None when absent or unreadable."""
    value = header(headers, "x-ms-throttle-limit-percentage")
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


@dataclass
class GraphCounters:
    """What this gateway sent: logical requests by method, and throttling seen."""

    requests: int = 0
    by_method: dict[str, int] = field(default_factory=dict)
    batch_items: int = 0
    throttled_items: int = 0
    answered_items: int = 0       # batch items answered for good (not 429/503/504): the tenant's progress
    throttled_envelopes: int = 0  # whole $batch envelopes still 429 after the SDK's retries

    def count(self, method: str) -> None:
        self.requests += 1
        self.by_method[method] = self.by_method.get(method, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "byMethod": dict(self.by_method), "batchItems": self.batch_items,
                "throttledItems": self.throttled_items, "answeredItems": self.answered_items,
                "throttledEnvelopes": self.throttled_envelopes}


@dataclass
class _EnvelopeRetries:
    """How often in a row one `batch_get` has sent an envelope again after a 503/504 or a dropped connection."""

    unavailable: int = 0
    lost: int = 0


def _is_sign_in_failure(exc: Exception) -> bool:
    """True when azure-identity could not get a token (CredentialUnavailableError is a subclass)."""
    from azure.core.exceptions import ClientAuthenticationError

    return isinstance(exc, ClientAuthenticationError)


def _headers_dict(collection: Any) -> dict[str, str]:
    """kiota's HeadersCollection gives sets of values; keep the first, as plain strings."""
    if collection is None:
        return {}
    out: dict[str, str] = {}
    for key in collection.keys():
        values = collection.get(key)
        out[key.lower()] = next(iter(values)) if values else ""
    return out


class GraphGateway:
    """The one door to Microsoft Graph for a tenant. Build once per process; the client is lazy."""

    def __init__(self, settings: Settings, *, auth_provider: Any = None, budget: RuPace | None = None) -> None:
        self.settings = settings
        self._auth_provider = auth_provider
        self._auth: Any = None  # the provider the client uses (built with it)
        self._client: GraphServiceClient | None = None
        self.counters = GraphCounters()
        self.budget = budget or RuPace()  # learns the tenant's RU pace: Graph never says its bucket
        self.auth_pace = CallPace()  # the tenant's authentication-method reads, under their own call limit
        self.reports_pace = FixedPace(REPORTS_PER_10S, 10.0)  # Graph's reports limit (registrations.py)
        self._credential: Any = None  # a credential this gateway created for itself (closed by `close`)
        self.tenant_confirmed = False  # set by shared.graph.tenant.confirm_tenant before the first request
        self._tenant_lock: asyncio.Lock | None = None  # one confirmation at a time (parallel first reads)

    # ------------------------------------------------------------------ construction
    @property
    def client(self) -> GraphServiceClient:
        """The msgraph-sdk client, built on first use (imports cost ~0.3 s; cold start counts them)."""
        if self._client is None:
            from msgraph import GraphServiceClient
            from msgraph.graph_request_adapter import GraphRequestAdapter

            from shared.graph.auth import app_credential, build_auth_provider

            if self._auth_provider is None:  # the app's own sign-in, which this gateway then closes
                self._credential = app_credential(self.settings)
            auth = self._auth = self._auth_provider or build_auth_provider(self.settings, credential=self._credential)
            adapter = GraphRequestAdapter(auth)  # no custom httpx client: pitfall 8
            adapter.base_url = self.settings.graph_base_url
            self._client = GraphServiceClient(request_adapter=adapter)
        return self._client

    async def close(self) -> None:
        await self.budget.stop_peers()
        await self.auth_pace.stop_peers()
        if self._client is not None:
            http = getattr(self._client.request_adapter, "_http_client", None)
            if http is not None:
                await http.aclose()
            self._client = None
            self._auth = None
        if self._credential is not None:
            credential, self._credential = self._credential, None
            await credential.close()

    async def access_token(self) -> str:
        """The bearer token this gateway sends to Graph ("" when its credential gives none), for
        `shared.graph.permissions` to read the app's roles from; never logged."""
        _ = self.client  # builds the auth provider
        provider = getattr(self._auth, "access_token_provider", None)
        if provider is None:
            return ""
        try:
            return str(await provider.get_authorization_token(self.settings.graph_base_url + "/") or "")
        except Exception as exc:  # a credential that cannot sign in: graphSignInFailed, with `az login`
            raise self._map_error(exc, "getting a Graph token") from exc

    async def confirm_tenant(self) -> None:
        """Refuse (WrongTenant) unless the tenant answering is TENANT_ID; once per gateway (see
        shared/graph/tenant.py)."""
        if self.tenant_confirmed:
            return
        from shared.graph.tenant import confirm_tenant

        self._tenant_lock = self._tenant_lock or asyncio.Lock()
        async with self._tenant_lock:
            await confirm_tenant(self)

    # ------------------------------------------------------------------ typed SDK calls
    async def call(self, method: str, operation: Callable[[], Awaitable[T]], *, what: str) -> T:
        """Run one SDK call (`operation`), counting it and mapping SDK errors to ours."""
        await self.confirm_tenant()
        self.counters.count(method)
        try:
            return await operation()
        except Exception as exc:  # the SDK raises ODataError/APIError/httpx errors; map them all here
            raise self._map_error(exc, what) from exc

    # ------------------------------------------------------------------ raw JSON
    def _request(self, method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        from kiota_abstractions.method import Method
        from kiota_abstractions.request_information import RequestInformation

        info = RequestInformation()
        info.http_method = Method[method]
        info.url = url if url.startswith("http") else self.settings.graph_base_url + url
        info.headers.try_add("Accept", "application/json")
        for key, value in (headers or {}).items():
            info.headers.try_add(key, value)
        if body is not None:
            info.set_stream_content(json.dumps(body).encode(), "application/json")
        return info

    async def send_raw(self, method: str, url: str, body: Any = None, *, headers: dict[str, str] | None = None,
                       what: str = "", confirm: bool = True) -> tuple[Any, dict[str, str]]:
        """One request through the SDK's adapter; returns (parsed JSON or None, response headers).

        `confirm=False` only for the tenant confirmation's own read (every other request waits for it)."""
        if confirm:
            await self.confirm_tenant()
        from kiota_http.middleware.options import HeadersInspectionHandlerOption
        from msgraph.generated.models.o_data_errors.o_data_error import ODataError

        info = self._request(method, url, body, headers)
        inspect = HeadersInspectionHandlerOption(inspect_response_headers=True)
        info.add_request_options([inspect])
        self.counters.count(method)
        try:
            # kiota's stub types this call as returning None; for "bytes" it returns the body (or None on 204)
            raw: bytes | None = await self.client.request_adapter.send_primitive_async(  # type: ignore[func-returns-value]
                info, "bytes", {"XXX": ODataError})
        except Exception as exc:
            raise self._map_error(exc, what or f"{method} {url.split('?')[0]}") from exc
        return (json.loads(raw) if raw else None), _headers_dict(inspect.response_headers)

    async def get_json(self, url: str, *, headers: dict[str, str] | None = None, what: str = "",
                       ru: float = 0.0) -> dict[str, Any]:
        """GET `url` (relative to the base URL, or an absolute nextLink/deltaLink) as raw JSON.

        `ru`: resource units to charge to the tenant's pace without waiting (bulk reads running beside
        `batch_get` pass their cost, and their answers teach the pace as the batches' do).
        """
        if ru:
            self.budget.charge(ru)
        body, answer_headers = await self.send_raw("GET", url, headers=headers, what=what)
        if ru:
            self.budget.observe(limit_percentage(answer_headers))
        return body or {}

    async def get_pages(self, url: str, *, what: str = "") -> AsyncIterator[dict[str, Any]]:
        """Each page of a collection, following `@odata.nextLink` to the end."""
        next_url: str | None = url
        while next_url:
            page = await self.get_json(next_url, what=what)
            yield page
            next_url = page.get("@odata.nextLink")

    async def get_all(self, url: str, *, what: str = "") -> list[dict[str, Any]]:
        """Every item of a paged collection."""
        items: list[dict[str, Any]] = []
        async for page in self.get_pages(url, what=what):
            items.extend(page.get("value", []))
        return items

    # ------------------------------------------------------------------ $batch
    async def batch(self, requests: list[dict[str, Any]]) -> dict[str, BatchItem]:
        """One `$batch` call of at most 20 requests; answers matched by id (they come in any order)."""
        if not requests:
            return {}
        if len(requests) > BATCH_LIMIT:
            raise ValueError(f"$batch takes at most {BATCH_LIMIT} requests, got {len(requests)}")
        body, _ = await self.send_raw("POST", "/$batch", {"requests": requests}, what="$batch")
        self.counters.batch_items += len(requests)
        out: dict[str, BatchItem] = {}
        for item in (body or {}).get("responses", []):
            out[str(item.get("id"))] = BatchItem(id=str(item.get("id")), status=int(item.get("status", 0)),
                                                 body=item.get("body"), headers=item.get("headers") or {})
        return out

    async def batch_get(self, urls: dict[str, str], *, max_attempts: int = 8, ru_per_item: float = 1.0,
                        max_seconds: float = BATCH_GET_MAX_SECONDS, pace: CallPace | None = None
                        ) -> dict[str, BatchItem]:
        """GET many relative URLs, 20 per `$batch`, retrying what Graph could not answer yet.

        Spends `ru_per_item` from the tenant's pace per item before sending, and tells the pace what Graph
        answered (the items' `x-ms-throttle-limit-percentage`, or a 429's `Retry-After`), so a bulk run keeps
        to Graph's pace. Items answered 429 go again after their `Retry-After` (503/504 items at once); an
        envelope refused whole is handled by `_send_round`. Gives up after `max_attempts` rounds in a row in
        which no batch item of this tenant was answered, by this call or a concurrent one: under Graph's
        per-tenant limit on authentication-method reads a caller may wait its turn while others progress, and
        a message given up is read again from the start. It also stops starting rounds after `max_seconds`, so
        a queue message hands its worker back (re-queued for the Retry-After) rather than wait without end.
        What is left is returned as 429s.

        With a `pace` (reads under a per-tenant call limit, such as authentication methods), each `$batch`
        holds at most the pace's burst and waits for the pace; its items' answers and 429s teach that pace and
        wait out their `Retry-After` there, not in the RU pace, whose other spenders that limit does not hold
        back (their RU are still spent from it).
        """
        pending = dict(urls)
        done: dict[str, BatchItem] = {}
        envelopes = _EnvelopeRetries()
        stalled = 0
        started = time.monotonic()
        while pending and stalled < max_attempts and time.monotonic() - started < max_seconds:
            answered = self.counters.answered_items
            ids = list(pending)
            retry: dict[str, str] = {}
            while ids:
                size = await pace.take(min(len(ids), BATCH_LIMIT)) if pace is not None else BATCH_LIMIT
                sent_at = time.monotonic()
                chunk, ids = ids[:size], ids[size:]
                answers = await self._send_round(chunk, pending, ru_per_item, envelopes)
                for i in chunk:
                    answer = answers.get(i)
                    if answer is None or answer.status in (429, 503, 504):
                        retry[i] = pending[i]
                    else:
                        done[i] = answer
                self._learn(answers, pace, sent_at)
            pending = retry
            stalled = stalled + 1 if self.counters.answered_items == answered else 0
            if pending:
                await asyncio.sleep(0)  # the budget holds the actual wait
        for i, url in pending.items():
            done[i] = BatchItem(id=i, status=429, body={"error": {"code": "TooManyRequests",
                                                                   "message": f"still throttled: {url}"}})
        return done

    def _learn(self, answers: dict[str, BatchItem], pace: CallPace | None, sent_at: float) -> None:
        """Count one `$batch`'s answers and tell the pace that governs them what Graph said.

        Reads under a call limit (`pace`) teach that pace, but for their 429s in the RU bucket's scope
        (`BatchItem.app_limit`), which teach the RU pace: the header on their answers may speak of either
        limit, and a burst refused by the call limit says nothing of the RU bucket. Other reads teach the RU
        pace: the highest `x-ms-throttle-limit-percentage` of the answered items, and a pause for the longest
        `Retry-After` of the refused ones."""
        refused = [a for a in answers.values() if a.status == 429]
        accepted = sum(1 for a in answers.values() if a.status not in (429, 503, 504))
        self.counters.throttled_items += len(refused)
        self.counters.answered_items += accepted
        if pace is not None:
            calls = [a for a in refused if not a.app_limit]
            if answers:
                pace.answered(accepted, len(calls), max((a.retry_after for a in calls), default=1.0),
                              sent_at=sent_at)
            refused = [a for a in refused if a.app_limit]
        else:
            metered = [a.limit_percentage for a in answers.values() if a.status != 429]
            if metered:
                self.budget.observe(max((p for p in metered if p is not None), default=None))
        if refused:
            near = [a.limit_percentage for a in refused if a.limit_percentage is not None]
            self.budget.pause(max(a.retry_after for a in refused), max(near, default=None))

    async def _send_round(self, chunk: list[str], pending: dict[str, str], ru_per_item: float,
                          envelopes: _EnvelopeRetries) -> dict[str, BatchItem]:
        """One `$batch` of GETs for `chunk`; {} when the envelope itself must be sent again (every item retried).

        The SDK's retry handler has already retried the envelope on 429/503/504. Still refused: a 429 pauses the
        tenant's budget for its `Retry-After`, a 503/504 waits a doubling backoff, a dropped connection is sent
        again; a few 503/504s or drops in a row (a round of a bulk read under Graph's limits sends many
        envelopes) raise. An envelope Graph refused ran none of its items, and these are idempotent reads, so
        sending every item again neither loses nor repeats a result: answers are kept by id, once. A queue
        message thus keeps its deliveries for real failures.
        """
        await self.budget.spend(ru_per_item * len(chunk))
        try:
            answers = await self.batch([{"id": i, "method": "GET", "url": pending[i]} for i in chunk])
            envelopes.unavailable = envelopes.lost = 0  # only refusals in a row mean Graph is down
            return answers
        except GraphThrottled as exc:
            self.counters.throttled_envelopes += 1
            log.info("a $batch of %d reads was throttled whole; sending it again after %s s", len(chunk),
                     exc.retry_after)
            self.budget.pause(exc.retry_after or 1.0)
        except GraphUnavailable as exc:
            if exc.status_code in (503, 504) and envelopes.unavailable < BATCH_UNAVAILABLE_RETRIES:
                envelopes.unavailable += 1
                log.info("a $batch of %d reads answered %d; sending it again (%d)", len(chunk), exc.status_code,
                         envelopes.unavailable)
                await asyncio.sleep(0.5 * 2 ** (envelopes.unavailable - 1))
            elif exc.status_code is None and envelopes.lost < BATCH_TRANSPORT_RETRIES:
                envelopes.lost += 1
                log.info("a $batch of %d reads got no answer (%d); sending them again", len(chunk), envelopes.lost)
                await asyncio.sleep(0.1 * envelopes.lost)
            else:
                raise
        return {}

    # ------------------------------------------------------------------ errors
    def _map_error(self, exc: Exception, what: str) -> Exception:
        """Turn an SDK or transport exception into our tree, without echoing secrets or bodies."""
        status = getattr(exc, "response_status_code", None)
        odata = getattr(exc, "error", None)
        graph_code = getattr(odata, "code", None) if odata is not None else None
        message = getattr(odata, "message", None) if odata is not None else None
        if status is None:
            if _is_sign_in_failure(exc):
                log.warning("no Graph token during %s: %s", what, type(exc).__name__)
                return GraphSignInFailed(
                    f"signing in to Microsoft Graph failed during {what} ({type(exc).__name__}). On an "
                    "administrator's machine run `az login` (and `az account set --subscription ...`) first; in "
                    "Azure, check that AZURE_CLIENT_ID names the app's managed identity")
            if isinstance(exc, ValueError | TypeError | KeyError):
                return exc  # programming errors are not Graph's fault: let them surface
            log.warning("Graph unreachable during %s: %s", what, type(exc).__name__)
            return GraphUnavailable(f"Microsoft Graph did not answer during {what}: {type(exc).__name__}")
        text = f"Graph answered {status} ({graph_code or 'no code'}) during {what}: {message or ''}".strip()
        if status == 404:
            return NotFound(text)
        if status == 429:
            headers = _headers_dict(getattr(exc, "response_headers", None))
            retry_after = None
            try:
                retry_after = float(headers["retry-after"]) if "retry-after" in headers else None
            except ValueError:
                retry_after = None
            return GraphThrottled(text, retry_after=retry_after, status_code=status, graph_code=graph_code)
        if status in (502, 503, 504):
            return GraphUnavailable(text, status_code=status, graph_code=graph_code)
        return GraphError(text, status_code=status, graph_code=graph_code)
