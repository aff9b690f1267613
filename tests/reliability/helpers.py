"""Shared tools of the reliability tests: storm knobs, a storage snapshot, a host-like queue drain, and the
ground truth a run must end in.

The snapshot, the ground truth (`judge`, `raw_flags`, `raw_snapshots`, `raw_checkpoint`) and the drain use their
own SDK clients built from the connection string, not the product's StateStore, so they prove what is in
storage independently of the code under test.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import logging
import re
import time
import zlib
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables.aio import TableServiceClient
from azure.functions.queue import QueueMessage
from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy
from azure.storage.queue.aio import QueueClient

from graphsim.launcher import Simulator
from shared.config import PASSKEY_READS_QUEUE, QUEUE_NAME
from shared.errors import PasskeyGuardError
from shared.state import TABLES
from tests.e2e.stack import tenant, user

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
MAX_DEQUEUE_COUNT = 5  # host.json extensions.queues.maxDequeueCount
#: Routes anyone can reach (no sign-in): their error bodies carry the code only.
PUBLIC_ROUTES = {"health", "graph/notifications", "graph/lifecycle", "tickets"}

#: The storm of issue 7: 30 % 429 (Retry-After 1 s), 5 % 503, dropped connections, latency spikes (a
#: log-normal wait with a 60 ms median and a 120 ms p99, about the 0-120 ms uniform jitter it replaced).
STORM = {"fault_429_rate": 0.30, "fault_429_retry_after_s": 1, "fault_503_rate": 0.05, "fault_drop_rate": 0.03,
         "latency_ms": 60.0, "latency_p99_ms": 120.0}
CALM = {"fault_429_rate": 0.0, "fault_503_rate": 0.0, "fault_504_rate": 0.0, "fault_drop_rate": 0.0,
        "latency_ms": 0.0, "latency_p99_ms": 0.0, "latency_per_item_ms": 0.0}


class Storm:
    """Turns the storm on for a block and counts what the simulator injected meanwhile."""

    def __init__(self, sim: Simulator, *, seed: int, **overrides: Any) -> None:
        self.sim = sim
        self.knobs = {**STORM, "fault_seed": seed, **overrides}
        self.faults: dict[str, int] = {}
        self.requests = 0

    def __enter__(self) -> Storm:
        self.sim.reset_stats()
        self.sim.configure(**self.knobs)
        return self

    def __exit__(self, *exc: object) -> None:
        self.sim.configure(**CALM)
        stats = self.sim.stats()
        injected = stats.get("faults") or {}
        self.requests = int(stats.get("http_requests", 0))
        delayed = int((stats.get("latency") or {}).get("delayed", 0))  # answers that actually waited
        self.faults = {"429": int(injected.get("429", 0)), "503": int(injected.get("503", 0)),
                       "504": int(injected.get("504", 0)), "drop": int(injected.get("drop", 0)),
                       "latency": delayed}


# ------------------------------------------------------------------------------------------ storage snapshot
_VOLATILE = {"Timestamp", "etag", "odata.etag"}


async def snapshot_storage(connection_string: str, tenant_id: str, *, queue_name: str = QUEUE_NAME
                           ) -> dict[str, Any]:
    """Every row of `tenant_id` in every table (all properties but the server timestamp) and the queue.

    Rows are matched by PartitionKey prefix (every key starts with the tenant id); the queue is shared by
    tenants, so its message count and the texts of up to 32 peeked messages are taken whole.
    """
    out: dict[str, Any] = {}
    async with TableServiceClient.from_connection_string(connection_string) as service:
        for name in TABLES:
            client = service.get_table_client(name)
            rows: list[tuple[str, str, str]] = []
            try:
                async for entity in client.query_entities("PartitionKey ge @lo and PartitionKey lt @hi",
                                                          parameters={"lo": tenant_id, "hi": tenant_id + "~"}):
                    props = {k: _plain(v) for k, v in entity.items() if k not in _VOLATILE}
                    rows.append((entity["PartitionKey"], entity["RowKey"], json.dumps(props, sort_keys=True,
                                                                                      default=str)))
            except ResourceNotFoundError:
                pass  # the table was never created: it holds nothing
            out[name] = sorted(rows)
    async with _queue(connection_string, queue_name) as queue:
        try:
            props = await queue.get_queue_properties()
            peeked = [m.content async for m in _peek(queue)]
            out["queue"] = {"count": int(props.approximate_message_count or 0), "peek": sorted(peeked)}
        except ResourceNotFoundError:
            out["queue"] = {"count": 0, "peek": []}
    return out


async def _peek(queue: QueueClient) -> Any:
    for message in await queue.peek_messages(max_messages=32):
        yield message


def _plain(value: Any) -> Any:
    return getattr(value, "value", value)


def storage_diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """What changed between two snapshots: rows added/removed per table, and the queue."""
    diff: dict[str, Any] = {}
    for name in before.keys() | after.keys():
        if name == "queue":
            if before.get(name) != after.get(name):
                diff[name] = {"before": before.get(name), "after": after.get(name)}
            continue
        old, new = set(map(tuple, before.get(name, []))), set(map(tuple, after.get(name, [])))
        if old != new:
            diff[name] = {"added": sorted(new - old)[:5], "removed": sorted(old - new)[:5],
                          "changes": len(old ^ new)}
    return diff


def _queue(connection_string: str, name: str) -> QueueClient:
    return QueueClient.from_connection_string(connection_string, name, message_encode_policy=TextBase64EncodePolicy(),
                                              message_decode_policy=TextBase64DecodePolicy())


def _rejected(text: str) -> int | None:
    """The `rejected` count of a batch answer, or None when the answer has none."""
    try:
        count = json.loads(text).get("rejected")
    except (ValueError, AttributeError):
        return None
    return count if isinstance(count, int) and count > 0 else None


class Probe:
    """Sends requests to the served app; each refused one is checked for writes against a snapshot."""

    def __init__(self, stack: Any, conn: str) -> None:
        self.stack, self.conn = stack, conn
        self.statuses: Counter[int] = Counter()
        self.sent = 0
        self.refused = 0
        self.invalid = 0          # requests the test's oracle (tests/reliability/invalid.py) calls invalid
        self.invalid_refused = 0  # ... and of those, the ones refused
        self.valid_refused = 0
        self.invalid_accepted: list[str] = []  # labels, for the figures' detail
        self.problems: list[str] = []
        self.last: dict[str, Any] = {}

    async def start(self) -> None:
        self.last = await snapshot_storage(self.conn, self.stack.tenant_id)

    async def post(self, path: str, body: bytes, *, headers: dict[str, str] | None = None,
                   params: dict[str, str] | None = None, label: str = "", invalid: bool | None = None,
                   invalid_items: int | None = None, **as_caller: Any) -> int:
        """POST and judge the answer; `principal=` as in Stack.post (the admin by default); `invalid`: what
        the test's oracle says of the request (None: not judged); `invalid_items` as in `_judge`."""
        status, text, _ = await self.stack.post(path, body, headers=headers, params=params, **as_caller)
        return await self._judge(status, text, label or path, public=path in PUBLIC_ROUTES, invalid=invalid,
                                 invalid_items=invalid_items)

    async def get(self, path: str, params: dict[str, str], label: str = "", invalid: bool | None = None,
                  **as_caller: Any) -> int:
        status, text, _ = await self.stack.get(path, params=params, **as_caller)
        return await self._judge(status, text, label or path, public=path in PUBLIC_ROUTES, invalid=invalid)

    async def _judge(self, status: int, text: str, label: str, *, public: bool = False,
                     invalid: bool | None = None, invalid_items: int | None = None) -> int:
        """Count the answer; a refusal must be the error envelope (a code only on public routes) and
        must not have written anything. `invalid_items`: for a batch whose items are refused one by one (change
        notifications), how many the oracle calls invalid; a 202 that counts exactly those as `rejected` refused
        them."""
        self.sent += 1
        self.statuses[status] += 1
        self.invalid += bool(invalid)
        self.invalid_refused += bool(invalid) and (status >= 400 or _rejected(text) == invalid_items)
        self.valid_refused += invalid is False and status >= 400
        if invalid and status < 400 and _rejected(text) != invalid_items:
            self.invalid_accepted.append(f"{label}: {status}")
        if status >= 500:
            self.problems.append(f"{label}: {status} {text[:200]}")
        if status >= 400:
            self.refused += 1
            try:
                error = json.loads(text)["error"]
                if public:
                    assert set(error) == {"code"} and error["code"]
                else:
                    assert set(error) <= {"code", "message", "detail"} and error["code"] and error["message"]
            except (ValueError, KeyError, TypeError, AssertionError):
                self.problems.append(f"{label}: {status} is not the error envelope: {text[:200]}")
        after = await snapshot_storage(self.conn, self.stack.tenant_id)
        if status >= 400:
            diff = storage_diff(self.last, after)
            if diff:
                self.problems.append(f"{label}: refused with {status} but wrote {json.dumps(diff, default=str)[:300]}")
        self.last = after
        return status


# ------------------------------------------------------------------------------------------ raw rows
# The ground truth is read with the SDK's own clients and decoded here from the documented row shapes
# (shared/state/codec.py's module docstring, flags.py, snapshots.py, checkpoints.py), never through the product's
# store: a fault in the store's reading code cannot then hide a fault in what it wrote.
_SNAPSHOT_PROPERTY = re.compile(r"u([0-9a-f]{32})")


def _decoded(entity: Mapping[str, Any]) -> dict[str, Any]:
    """A stored document: `<name>__json` is JSON, `<name>__z0..` + `<name>__zn` zlib-compressed base64 JSON."""
    doc: dict[str, Any] = {}
    for prop, raw in entity.items():
        value = _plain(raw)
        if prop.endswith("__json"):
            doc[prop[:-6]] = json.loads(value)
        elif prop.endswith("__zn"):
            name = prop[:-4]
            packed = "".join(str(_plain(entity[f"{name}__z{i}"])) for i in range(int(value)))
            doc[name] = json.loads(zlib.decompress(base64.b64decode(packed)).decode("ascii"))
        elif not re.fullmatch(r".+__z\d+", prop):
            doc[prop] = value
    return doc


async def _tenant_rows(connection_string: str, table: str, tenant_id: str) -> list[dict[str, Any]]:
    """Every row of `tenant_id` (PartitionKey `<tenant>` or `<tenant>|...`) in `table`, decoded."""
    rows: list[dict[str, Any]] = []
    async with TableServiceClient.from_connection_string(connection_string) as service:
        client = service.get_table_client(table)
        try:
            async for entity in client.query_entities("PartitionKey ge @lo and PartitionKey lt @hi",
                                                      parameters={"lo": tenant_id, "hi": tenant_id + "~"}):
                rows.append(_decoded(entity))
        except ResourceNotFoundError:
            pass  # never created: no rows
    return rows


async def raw_flags(connection_string: str, tenant_id: str) -> list[dict[str, Any]]:
    """Every flag row of the tenant as stored (one dict per row: `userId`, `oldUpn`, `newUpn`, `history`...)."""
    return await _tenant_rows(connection_string, "flags", tenant_id)


async def raw_snapshots(connection_string: str, tenant_id: str) -> dict[str, list[str]]:
    """Each user's snapshot UPNs as stored (a property `u<hex id>` holding `<upn>[ <seen at>]`); a user found
    in more than one row has more than one UPN here."""
    out: dict[str, list[str]] = {}
    for row in await _tenant_rows(connection_string, "snapshots", tenant_id):
        for prop, value in row.items():
            match = _SNAPSHOT_PROPERTY.fullmatch(prop)
            if match and isinstance(value, str):
                h = match.group(1)
                user_id = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
                out.setdefault(user_id, []).append(value.split(" ", 1)[0])
    return out


async def raw_checkpoint(connection_string: str, tenant_id: str, name: str = "delta") -> dict[str, Any] | None:
    """The stored value of checkpoint `name` (RowKey `name`), or None when there is none."""
    for row in await _tenant_rows(connection_string, "checkpoints", tenant_id):
        if row.get("RowKey") == name and isinstance(row.get("value"), dict):
            return dict(row["value"])
    return None


# ------------------------------------------------------------------------------------------ host-like drain
@dataclass
class DrainResult:
    """What a drain did: deliveries, failures (redelivered later) and messages sent to the poison queue."""

    delivered: int = 0
    failed: int = 0
    clean_failed: int = 0  # failures that were our own error (PasskeyGuardError), the rest are unclear
    poisoned: int = 0
    storage_errors: int = 0
    errors: dict[str, int] = field(default_factory=dict)


async def drain(connection_string: str, processor: Any, *, slow_lane: Any = None, batch_size: int = 16,
                new_batch_threshold: int = 8, within: float = 90.0, visibility: int = 30, queue_name: str = QUEUE_NAME,
                until: Callable[[], bool] | None = None) -> DrainResult:
    """Deliver the queue to `processor` (the indexed `upn_processor`) the way the Functions host does
    (host.json: batchSize 16, newBatchThreshold 8): a new batch is fetched whenever no more than
    `new_batch_threshold` deliveries are in flight; a message being processed is kept hidden by renewing
    its `visibility` (as the host does), a failed delivery becomes visible again, and a message that failed
    MAX_DEQUEUE_COUNT times moves to `<queue>-poison`. With storage down the renewal fails and the message
    reappears after `visibility`, as on the host. Returns when the queue is empty (hidden messages, e.g.
    re-queued after a 429, included) and `until()`, when given, is true: a producer running beside the
    drain may still be queueing. Not drained within `within` seconds, deliveries still running or not,
    is an AssertionError. With `slow_lane` (the indexed `passkey_reads`), the `passkey-reads` queue the
    processor feeds is delivered to it beside, by the same rules, until both are empty."""
    result = DrainResult()
    lane = {"batch_size": batch_size, "new_batch_threshold": new_batch_threshold, "within": within,
            "visibility": visibility, "deadline": time.monotonic() + within}
    if slow_lane is None:
        await _drain_queue(connection_string, processor, result, queue_name=queue_name, until=until, **lane)
        return result
    changes_done = False

    async def changes() -> None:
        nonlocal changes_done
        try:
            await _drain_queue(connection_string, processor, result, queue_name=queue_name, until=until, **lane)
        finally:
            changes_done = True

    await asyncio.gather(changes(), _drain_queue(connection_string, slow_lane, result, queue_name=PASSKEY_READS_QUEUE,
                                                 until=lambda: changes_done, **lane))
    return result


async def _drain_queue(connection_string: str, processor: Any, result: DrainResult, *, batch_size: int,
                       new_batch_threshold: int, within: float, visibility: int, queue_name: str,
                       until: Callable[[], bool] | None, deadline: float) -> None:
    """One queue of `drain`, its counts added to `result`."""
    async with _queue(connection_string, queue_name) as queue, \
            _queue(connection_string, queue_name + "-poison") as poison:
        with contextlib.suppress(ResourceExistsError):
            await queue.create_queue()

        async def one(msg: Any) -> None:
            body = str(msg.content).encode()
            held = [msg.pop_receipt]
            done = asyncio.Event()
            renewing = asyncio.create_task(_keep_hidden(queue, msg.id, held, visibility, done))
            failure: Exception | None = None
            try:
                await processor(QueueMessage(id=msg.id, body=body, dequeue_count=msg.dequeue_count,
                                             pop_receipt=msg.pop_receipt))
            except Exception as exc:
                failure = exc
            finally:
                done.set()  # on cancellation too: the renewal stops
            await renewing
            msg.pop_receipt = held[0]
            if failure is not None:
                name = getattr(failure, "code", type(failure).__name__)
                result.errors[name] = result.errors.get(name, 0) + 1
                result.failed += 1
                result.clean_failed += isinstance(failure, PasskeyGuardError)
                with contextlib.suppress(AzureError):  # storage down: the message reappears after `visibility`
                    if msg.dequeue_count >= MAX_DEQUEUE_COUNT:
                        with contextlib.suppress(ResourceExistsError):
                            await poison.create_queue()
                        await poison.send_message(str(msg.content))
                        await queue.delete_message(msg)
                        result.poisoned += 1
                    else:
                        await queue.update_message(msg, visibility_timeout=0)
                return
            result.delivered += 1
            with contextlib.suppress(AzureError):  # not deleted: delivered again later, which must be harmless
                await queue.delete_message(msg)

        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                if len(running) <= new_batch_threshold:
                    try:
                        batch = [m async for m in queue.receive_messages(
                            messages_per_page=batch_size, max_messages=batch_size, visibility_timeout=visibility)]
                    except AzureError:  # storage is down: the host keeps polling
                        result.storage_errors += 1
                        await asyncio.sleep(0.3)
                        batch = []
                    for msg in batch[:batch_size]:
                        task = asyncio.create_task(one(msg))
                        running.add(task)
                        task.add_done_callback(running.discard)
                    if batch:
                        continue
                if running:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"queue not drained within {within} s ({len(running)} deliveries "
                                             "still running)")
                    await asyncio.wait(running, timeout=0.2, return_when=asyncio.FIRST_COMPLETED)
                    continue
                try:
                    left = (await queue.get_queue_properties()).approximate_message_count
                except AzureError:
                    result.storage_errors += 1
                    left = -1
                if left == 0 and (until is None or until()):
                    return
                if time.monotonic() > deadline:
                    raise AssertionError(f"queue not drained within {within} s ({left} message(s) left)")
                await asyncio.sleep(0.2)
        finally:
            for task in list(running):
                task.cancel()


async def _keep_hidden(queue: QueueClient, message_id: str, held: list[str], visibility: int,
                       done: asyncio.Event) -> None:
    """Push a message's visibility out by `visibility` seconds every half of it until `done`, keeping the
    newest pop receipt in `held[0]` (the Functions host renews a message in process the same way, so a slow
    delivery, e.g. reads waiting their turn under Graph's limits, is not delivered twice). A renewal that
    fails (storage down, or the message gone) is tried again next time; an update in flight is never cut."""
    while True:
        try:
            await asyncio.wait_for(done.wait(), timeout=max(0.5, visibility / 2))
            return
        except TimeoutError:
            pass
        with contextlib.suppress(AzureError):
            renewed = await queue.update_message(message_id, pop_receipt=held[0], visibility_timeout=visibility)
            held[0] = renewed.pop_receipt


async def poison_count(connection_string: str, queue_name: str = QUEUE_NAME) -> int:
    """Messages in `<queue>-poison` (0 when it does not exist)."""
    async with _queue(connection_string, queue_name + "-poison") as poison:
        try:
            props = await poison.get_queue_properties()
        except ResourceNotFoundError:
            return 0
        return int(props.approximate_message_count or 0)


async def clear_queue(connection_string: str, queue_name: str = QUEUE_NAME) -> None:
    """Empty the shared change queue (with the slow lane it feeds, and their poison queues) so a test starts from
    nothing."""
    lanes = (queue_name, PASSKEY_READS_QUEUE) if queue_name == QUEUE_NAME else (queue_name,)
    for name in (n for lane in lanes for n in (lane, lane + "-poison")):
        async with _queue(connection_string, name) as queue:
            with contextlib.suppress(ResourceNotFoundError):
                await queue.clear_messages()


# ------------------------------------------------------------------------------------------ policy fixtures
PILOT = "99999999-0000-4000-8000-000000000001"
BREAK_GLASS = "99999999-0000-4000-8000-000000000003"
GROUPS = [{"id": gid, "displayName": name, "securityEnabled": True, "mailEnabled": False, "groupTypes": []}
          for gid, name in ((PILOT, "Passkey Pilot"), (BREAK_GLASS, "Break Glass"))]


def policy_document() -> dict[str, Any]:
    """The shipped desired state plus a report-only Conditional Access policy (every kind of write)."""
    doc = json.loads((REPO / "policy" / "desired-state.json").read_text())
    doc.pop("$schema", None)
    doc["conditionalAccess"] = {"displayName": "Require Authenticator passkey", "includeGroups": [PILOT],
                                "excludeGroups": [BREAK_GLASS], "includeApplications": ["All"]}
    return doc


def policy_tenant() -> dict[str, Any]:
    """A legacy-shape tenant that allows only a YubiKey and enforces attestation."""
    doc = tenant([user(1), user(2), user(3, key=None)], groups=copy.deepcopy(GROUPS))
    doc["authenticationMethodConfigurations"]["fido2"]["isAttestationEnforced"] = True
    return doc


# ------------------------------------------------------------------------------------------ ground truth
@dataclass
class Verdict:
    """The final state compared with the simulator's ground truth; `lost` counts every discrepancy."""

    expected: set[str]
    flagged: dict[str, int]
    missed: set[str]
    unexpected: set[str]
    duplicates: set[str]
    wrong_upn: set[str]
    stale_snapshots: set[str]
    history: dict[str, int] = field(default_factory=dict)
    incomplete: set[str] = field(default_factory=set)

    @property
    def lost(self) -> int:
        """Users whose outcome is wrong: missed, flagged wrongly, flagged twice, wrong snapshot/UPN, or a flag whose
        passkey details were never read."""
        return len(self.missed | self.unexpected | self.duplicates | self.wrong_upn | self.stale_snapshots
                   | self.incomplete)

    def explain(self) -> str:
        """The first few users of each kind of discrepancy, for an assertion message."""
        return (f"missed={sorted(self.missed)[:5]} unexpected={sorted(self.unexpected)[:5]} "
                f"duplicates={sorted(self.duplicates)[:5]} wrong_upn={sorted(self.wrong_upn)[:5]} "
                f"stale_snapshots={sorted(self.stale_snapshots)[:5]} incomplete={sorted(self.incomplete)[:5]}")


async def judge(connection_string: str, tenant_id: str, sim: Simulator, original: Mapping[str, str], *,
                changes: Mapping[str, int] | None = None) -> Verdict:
    """Compare the stored flags and snapshots (read with raw SDK clients) with `/_sim/state`.

    Every user whose UPN differs from `original` and who holds a passkey has exactly one flag row naming the
    old and new UPN, whose history holds exactly one detection per distinct change (`changes[user]`, 1 unless
    told) and at most one reading of its passkey details, which are complete: a replayed or duplicate delivery
    that added an entry shows here, where a count of rows keyed by user never could. Nobody else has a flag, and
    every snapshot holds the user's current UPN once."""
    truth = {u["id"].lower(): u for u in sim.state()["users"] if not u.get("deletedDateTime")}
    expected = {uid for uid, u in truth.items()
                if original.get(uid) and original[uid].lower() != u["userPrincipalName"].lower()
                and (u.get("authentication") or {}).get("fido2Methods")}
    counted: dict[str, int] = {}
    history: dict[str, int] = {}
    wrong: set[str] = set()
    duplicates: set[str] = set()
    incomplete: set[str] = set()
    for flag in await raw_flags(connection_string, tenant_id):
        uid = str(flag.get("userId", "")).lower()
        counted[uid] = counted.get(uid, 0) + 1
        notes = [str(h.get("note", "")) for h in flag.get("history") or []]
        history[uid] = history.get(uid, 0) + sum(1 for n in notes if n.startswith("UPN changed"))
        if sum(1 for n in notes if n.startswith("passkey details read")) > 1:
            duplicates.add(uid)
        if flag.get("passkeyDetails") != "complete":
            incomplete.add(uid)
        user = truth.get(uid)
        if user is None or flag.get("newUpn") != user["userPrincipalName"] or flag.get("oldUpn") != original.get(uid):
            wrong.add(uid)
    duplicates |= {uid for uid, n in history.items() if n != (changes or {}).get(uid, 1)}
    duplicates |= {uid for uid, n in counted.items() if n > 1}
    snaps = await raw_snapshots(connection_string, tenant_id)
    stale = {uid for uid, u in truth.items() if snaps.get(uid) != [u["userPrincipalName"]]}
    return Verdict(expected=expected, flagged=counted, missed=expected - set(counted),
                   unexpected=set(counted) - expected, duplicates=duplicates, wrong_upn=wrong & expected,
                   stale_snapshots=stale, history=history, incomplete=incomplete)
