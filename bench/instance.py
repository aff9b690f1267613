"""One queue-processor instance as its own OS process, as a Functions instance would be: its own Graph gateway,
paces and storage clients, nothing shared with other instances but Graph and Table Storage.

    PG_INSTANCE_SETTINGS='{"TENANT_ID": ..., ...}' python -m bench.instance [--wait-seconds S]

Drains the `upn-changes` queue with the product's in-process drain (host.json's delivery rules) until it is
empty for `--wait-seconds` (and, with `--until-file`, that file exists: the producer is done), then prints
one JSON line: the drain's counts, what its RU pace spent, waited and
was refused, and the pace it ended at. The benchmarks' `--instances K` and the shared-budget test start K of
these against one simulator and one Azurite.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any


async def run(settings: dict[str, str], wait_seconds: float, *, alone: bool = False,
              until_file: str | None = None) -> dict[str, Any]:
    import time
    from pathlib import Path

    from bench.common import peak_rss_mb
    from shared.config import Settings
    from shared.services import Services
    from shared.upn.drain import process_queue

    services = Services.from_settings(Settings.from_env(settings))
    if alone:  # for comparison: this instance's pace learns alone, deaf to the others (no pace board)
        services.graph.budget.peer = services.graph.auth_pace.peer = None
    last: list[float] = []
    cpu0 = time.process_time()
    try:
        drained = await process_queue(services, wait_seconds=wait_seconds,
                                      on_delivered=lambda: last.append(time.time()),
                                      until=None if until_file is None else Path(until_file).exists)
        budget = services.graph.budget
        return {"pid": os.getpid(), "messages": drained["messages"], "lastDoneAt": max(last, default=None),
                "cpuSeconds": round(time.process_time() - cpu0, 3), "flagged": len(drained["flagged"]),
                "requeued": drained["requeued"], "failed": drained["failed"], "remaining": drained["remaining"],
                "ruSpent": round(budget.spent, 1), "ruWaitedSeconds": round(budget.waited_seconds, 2),
                "ruPauses": budget.throttled, "ruPaceAtEnd": round(budget.rate, 1),
                "throttledItems": services.graph.counters.throttled_items, "peakRssMb": peak_rss_mb(),
                "passkeyReadsRefused": services.graph.auth_pace.refused,
                "passkeyReadsPerSecondAtEnd": round(services.graph.auth_pace.rate, 2)}
    finally:
        await services.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instance", description=__doc__.split("\n")[0])
    parser.add_argument("--wait-seconds", type=float, default=5.0, help="stop after the queue is empty this long")
    parser.add_argument("--until-file", help="keep polling an empty queue until this file exists (the producer "
                        "beside the instances is done)")
    parser.add_argument("--alone", action="store_true",
                        help="pace alone, without the other instances' news (the pace board), for comparison")
    args = parser.parse_args(argv)
    text = os.environ.get("PG_INSTANCE_SETTINGS")
    if not text:
        print("PG_INSTANCE_SETTINGS (the app settings as a JSON object) is required", file=sys.stderr)
        return 2
    result = asyncio.run(run(json.loads(text), args.wait_seconds, alone=args.alone,
                             until_file=args.until_file))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
