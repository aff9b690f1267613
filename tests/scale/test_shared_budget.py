"""Instances share one Graph budget: two queue-processor processes, each with its own paces and nothing in
common but Graph and Table Storage, against one small RU bucket neither is told. Adding the second instance
must not multiply the 429s."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from devhost.stack import stack_settings
from graphsim.launcher import start_simulator
from shared.config import Settings
from shared.services import Services
from shared.upn.messages import send_messages, users_message
from shared.upn.sweep import sweep
from tests.conftest import app_settings
from tests.e2e.stack import tenant, uid, user

ROOT = Path(__file__).resolve().parents[2]
USERS = 600


def _doc() -> dict:
    doc = tenant([user(n) for n in range(1, USERS + 1)])
    # A bucket a tenth of Graph's large-tenant one (400 RU, refilled over 10 s), the product never told; no separate
    # authentication-method limit, so the RU bucket is the one the instances share.
    doc["simulator"].update(throttle_capacity_ru=400, throttle_refill_ru_per_s=40, auth_methods_rps=0)
    return doc


async def _run_instances(azurite, instances: int, *flags: str) -> dict:
    doc = _doc()
    with start_simulator(doc) as sim:
        tenant_id = doc["tenantId"]
        settings = stack_settings(azurite, sim, tenant_id, **app_settings(tenant_id))
        services = Services.from_settings(Settings.from_env(settings))
        try:
            sim.configure(throttle_enabled=False)
            await sweep(services)  # seeds the snapshots
            sim.control("POST", "users/bulk_rename", {"from_domain": "contoso.example",
                                                        "to_domain": "fabrikam.example", "notify": False})
            ids = [{"id": uid(n)} for n in range(1, USERS + 1)]  # as notifications name them: ids only
            # 5 users a message: 60 messages, so each instance's drain (16 at a time) gets its share
            await send_messages(services, [users_message(ids[i:i + 5], source="notification")
                                           for i in range(0, USERS, 5)])
        finally:
            await services.close()
        sim.configure(throttle_enabled=True)
        sim.control("POST", "throttle/reset")
        sim.reset_stats()
        env = {**os.environ, "PG_INSTANCE_SETTINGS": json.dumps(settings)}
        procs = [await asyncio.create_subprocess_exec(sys.executable, "-m", "bench.instance", "--wait-seconds", "3",
                                                      *flags, cwd=ROOT, env=env, stdout=subprocess.PIPE)
                 for _ in range(instances)]
        outputs = [json.loads((await p.communicate())[0].decode().strip().splitlines()[-1]) for p in procs]
        stats = sim.stats()
        return {"instances": outputs, "responses_429": stats["responses_429"],
                "requests": stats["calls"]["total"], "flagged": sum(o["flagged"] for o in outputs)}


async def test_a_second_instance_does_not_multiply_the_429s(azurite):
    """The same 300 renamed users processed by one instance, then by two: every user flagged once either way,
    and the two instances together meet no more than 1.5 times the 429s of one, and at most 5 % of requests."""
    one = await _run_instances(azurite, 1)
    two = await _run_instances(azurite, 2)
    print(json.dumps({"one": one, "two": two}, indent=1))
    assert one["flagged"] == two["flagged"] == USERS
    assert two["responses_429"] <= max(1.5 * one["responses_429"], 0.05 * two["requests"]), (one, two)
