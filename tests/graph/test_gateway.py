"""GraphGateway against the simulator, through msgraph-sdk: raw reads, paging, $batch retries, errors."""
from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

import pytest

from graphsim.launcher import Simulator, start_simulator
from shared.config import Settings
from shared.errors import GraphError, GraphUnavailable, NotFound
from shared.graph.gateway import GraphGateway
from shared.graph.passkeys import read_passkeys
from tests.conftest import graph_waits_move_the_clock
from tests.e2e.stack import tenant, uid, user
from tests.graphsim.conftest import sdk_backoff_moves_the_clock


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    doc = tenant([user(n, key="cb69481e-8ff7-4039-93ec-0a2729a154a8" if n % 2 else None) for n in range(1, 131)])
    with start_simulator(doc) as running:
        yield running


def gateway(sim: Simulator, **env: str) -> GraphGateway:
    settings = Settings.from_env({"TENANT_ID": sim.state(users=False)["tenantId"], "STATE_STORAGE": "x",
                                  "GRAPH_BASE_URL": sim.base_url, "GRAPH_DEV_TOKEN": "gw-token", **env})
    return GraphGateway(settings)


async def test_raw_reads_follow_every_page(sim):
    """get_all follows @odata.nextLink to the end and keeps the raw JSON."""
    gw = gateway(sim)
    try:
        users = await gw.get_all("/users?$select=id,userPrincipalName")
        assert len(users) == 130 and len({u["id"] for u in users}) == 130
        assert gw.counters.requests >= 2  # 100 per page by default
    finally:
        await gw.close()


async def test_batch_get_retries_throttled_items_after_retry_after(sim, monkeypatch):
    """Items throttled inside a 200 $batch answer are retried after their Retry-After until they succeed."""
    graph_waits_move_the_clock(sim, monkeypatch)  # 40 passkey reads at 6/s: waited in the simulator's time
    gw = gateway(sim)
    sim.configure(fault_429_rate=0.4, fault_429_retry_after_s=1, fault_seed=7)
    try:
        answers = await gw.batch_get({uid(n): f"/users/{uid(n)}/authentication/fido2Methods"
                                      for n in range(1, 41)})
    finally:
        sim.configure(fault_429_rate=0.0)
        await gw.close()
    assert {a.status for a in answers.values()} == {200}
    assert gw.counters.throttled_items > 0
    assert [len(answers[uid(n)].body["value"]) for n in (1, 2)] == [1, 0]


async def test_batch_get_learns_a_bucket_it_is_not_told(sim, monkeypatch):
    """Against a small bucket the product is not told, bulk reads all complete with few 429s: the pace slows to
    about the refill rate instead of hammering."""
    # The pace's waits move the simulator's clock, so the test times nothing on the machine. The reads are of
    # users (1 RU each, as a passkey read), not passkeys: those also meet Graph's authentication-method
    # limit of 6 a second, far below this bucket's refill, and this test is about the RU bucket.
    graph_waits_move_the_clock(sim, monkeypatch)
    capacity, refill = 40.0, 80.0  # far below the pace's starting guess of 350 RU/s
    sim.configure(throttle_capacity_ru=capacity, throttle_refill_ru_per_s=refill)
    sim.control("POST", "throttle/reset")
    gw = gateway(sim)
    reads = {f"{r}-{uid(n)}": f"/users/{uid(n)}" for r in range(2) for n in range(1, 131)}
    try:
        answers = await gw.batch_get(reads)
    finally:
        sim.configure(throttle_capacity_ru=8000.0, throttle_refill_ru_per_s=800.0)
        sim.control("POST", "throttle/reset")
        await gw.close()
    assert {a.status for a in answers.values()} == {200}
    assert gw.counters.throttled_items <= 0.1 * len(reads), gw.counters.throttled_items
    assert gw.budget.rate < 2 * refill  # it learned to go slower than its guess


async def test_passkey_reads_refused_by_the_ru_bucket_teach_the_ru_pace_and_the_rest_the_call_pace(sim, monkeypatch):
    """Passkey reads meet two limits. 429s in the app's own scope (`x-ms-throttle-scope: Tenant_Application/...`,
    the RU bucket) pause the RU pace, which every bulk read of the tenant shares; 429s of the tenant's limit on
    authentication-method reads (`Tenant/...`) teach only the call pace."""
    graph_waits_move_the_clock(sim, monkeypatch)
    reads = {uid(n): f"/users/{uid(n)}/authentication/fido2Methods" for n in range(1, 41)}
    sim.configure(throttle_capacity_ru=10.0, throttle_refill_ru_per_s=10.0, auth_methods_rps=0)
    sim.control("POST", "throttle/reset")
    gw = gateway(sim)
    try:
        assert {a.status for a in (await gw.batch_get(reads, pace=gw.auth_pace)).values()} == {200}
        assert gw.budget.throttled > 0 and gw.auth_pace.refused == 0  # the RU bucket's 429s: the RU pace's
    finally:
        sim.configure(throttle_capacity_ru=8000.0, throttle_refill_ru_per_s=800.0, auth_methods_rps=6.0)
        sim.control("POST", "throttle/reset")
        await gw.close()
    gw = gateway(sim)
    try:
        assert {a.status for a in (await gw.batch_get(reads, pace=gw.auth_pace)).values()} == {200}
        assert gw.auth_pace.refused > 0 and gw.budget.throttled == 0  # the call limit's: the call pace's
    finally:
        await gw.close()


async def test_concurrent_bulk_reads_wait_their_turn_under_the_authentication_method_limit(sim, monkeypatch):
    """Three bulk reads of 20 passkeys at once against Graph's 6 a second: each waits its turn while the others
    progress, and none gives up, even allowed only two rounds in a row without any answer of the tenant."""
    waits = graph_waits_move_the_clock(sim, monkeypatch)
    sim.throttle_clock(frozen=True)  # the bucket refills only by the time the product waits
    sim.reset_stats()
    gw = gateway(sim)
    try:
        calls = [{uid(n): f"/users/{uid(n)}/authentication/fido2Methods" for n in range(first, first + 20)}
                 for first in (1, 21, 41)]
        results = await asyncio.gather(*(gw.batch_get(urls, max_attempts=2) for urls in calls))
    finally:
        sim.throttle_clock(frozen=False)
        await gw.close()
    for urls, answers in zip(calls, results, strict=True):
        assert set(answers) == set(urls) and {a.status for a in answers.values()} == {200}
    stats = sim.stats()
    assert stats["throttled"]["auth_methods"] > 0 and gw.counters.throttled_items > 0
    reads = stats["calls"]["by_route"]["GET /users/{id}/authentication/fido2Methods"]
    assert reads == 60 + stats["throttled"]["total"]  # each read answered once; every other try was a 429
    assert sum(waits) >= (60 - 6) / 6  # six a second, after the first second's six, in simulated time


async def test_a_bulk_read_past_its_time_starts_no_round_and_answers_what_is_left_as_429(sim):
    """After max_seconds no round starts: the items not read come back as 429s, which the callers turn into
    GraphThrottled (a queue message re-queued for later) instead of a worker waiting without end."""
    gw = gateway(sim)
    try:
        answers = await gw.batch_get({uid(1): f"/users/{uid(1)}/authentication/fido2Methods"}, max_seconds=0.0)
    finally:
        await gw.close()
    assert answers[uid(1)].status == 429 and gw.counters.batch_items == 0


def _seed_refusing_first(envelopes: int, rate: float) -> int:
    """A fault_seed under which the simulator refuses the first `envelopes` $batch envelopes at `rate` and
    accepts the next (it draws one number per envelope from random.Random(fault_seed))."""
    for seed in range(100_000):
        rng = random.Random(seed)
        draws = [rng.random() for _ in range(envelopes + 1)]
        if all(d < rate for d in draws[:envelopes]) and draws[envelopes] >= rate:
            return seed
    raise AssertionError("no such seed")


@pytest.mark.parametrize(("knob", "status"), [("fault_batch_429_rate", 429), ("fault_batch_503_rate", 503)])
async def test_an_envelope_refused_whole_is_sent_again_whole(sim, monkeypatch, knob, status):
    """A $batch envelope still 429 (Retry-After) or 503 after the SDK's three retries is sent again whole by
    the product: every passkey read answered, each item run exactly once, the Retry-After honoured."""
    sdk_slept = sdk_backoff_moves_the_clock(sim, monkeypatch)
    budget_waits = graph_waits_move_the_clock(sim, monkeypatch)
    sim.control("POST", "throttle/reset")
    sim.configure(**{knob: 0.5, "fault_429_retry_after_s": 1, "fault_seed": _seed_refusing_first(4, 0.5)})
    sim.reset_stats()
    gw = gateway(sim)
    users = [uid(n) for n in range(1, 6)]
    try:
        found = await read_passkeys(gw, users)
    finally:
        sim.configure(**{knob: 0.0, "fault_seed": None})
        await gw.close()
    assert {u: len(keys) for u, keys in found.items()} == {uid(n): n % 2 for n in range(1, 6)}
    stats = sim.stats()
    assert stats["faults"] == {f"batch_{status}": 4}  # the first try and the SDK's 3 retries; then the product's
    assert stats["calls"]["by_route"]["GET /users/{id}/authentication/fido2Methods"] == 5  # each item ran once
    assert stats["batch"] == {"requests": 1, "items": 5}
    if status == 429:
        assert sdk_slept == [1, 1, 1] and gw.counters.throttled_envelopes == 1
        assert sum(budget_waits) == pytest.approx(1.0, abs=0.1)  # then the product's own wait for Retry-After
    else:
        assert len(sdk_slept) == 3 and gw.counters.throttled_envelopes == 0


async def test_an_envelope_refused_for_good_fails_the_read_without_a_partial_answer(sim, monkeypatch):
    """Envelopes answered 503 every time: after the SDK's and the product's retries the read raises
    GraphUnavailable; no item ran, so nothing half-read is returned."""
    sdk_backoff_moves_the_clock(sim, monkeypatch)
    sim.configure(fault_batch_503_rate=1.0)
    sim.reset_stats()
    gw = gateway(sim)
    try:
        with pytest.raises(GraphUnavailable):
            await read_passkeys(gw, [uid(1), uid(2)])
    finally:
        sim.configure(fault_batch_503_rate=0.0)
        await gw.close()
    stats = sim.stats()
    assert stats["faults"] == {"batch_503": 4 * 4}  # 1 + 3 retries by the SDK, sent 1 + 3 times by the product
    assert "GET /users/{id}/authentication/fido2Methods" not in stats["calls"]["by_route"]


async def test_errors_map_to_our_tree(sim):
    """404 is NotFound, a refused token is a GraphError with its status, a dead host is GraphUnavailable."""
    gw = gateway(sim)
    try:
        with pytest.raises(NotFound):
            await gw.get_json("/users/00000000-dead-4bad-8bad-000000000000")
    finally:
        await gw.close()
    dead = gateway(sim, GRAPH_BASE_URL="http://127.0.0.1:9/v1.0")
    try:
        with pytest.raises(GraphUnavailable):
            await dead.get_json("/users")
    finally:
        await dead.close()


async def test_a_request_without_a_token_is_refused_by_graph(sim):
    """The simulator answers 401 with Graph's envelope when no bearer token is sent."""
    from kiota_abstractions.authentication.anonymous_authentication_provider import (
        AnonymousAuthenticationProvider,
    )

    settings = Settings.from_env({"TENANT_ID": "11111111-2222-4333-8444-555555555555", "STATE_STORAGE": "x",
                                  "GRAPH_BASE_URL": sim.base_url})
    gw = GraphGateway(settings, auth_provider=AnonymousAuthenticationProvider())
    try:
        with pytest.raises(GraphError) as error:
            await gw.get_json("/users")
        assert error.value.status_code == 401
    finally:
        await gw.close()
