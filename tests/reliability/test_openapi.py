"""The OpenAPI description (openapi/passkey-guard.yaml): it is valid OpenAPI 3.0 (that it lists exactly the
function app's routes, methods, auth levels and access is tests/functions/test_route_access.py's), every
error is the JSON envelope, and schemathesis, fuzzing every operation against the served app, finds no 5xx,
no answer that breaks the description, and no refused request that wrote anything."""
from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

import jsonschema
from hypothesis import HealthCheck, Phase, given, settings

from shared.principal import PRINCIPAL_HEADER
from shared.upn.sweep import sweep
from tests.conftest import CLIENT_STATE
from tests.e2e.stack import ADMIN_PRINCIPAL, running_stack, tenant, uid, user
from tests.functions.routes import ROUTE_ACCESS, SPEC, load_spec, spec_operations
from tests.reliability import invalid
from tests.reliability.helpers import snapshot_storage, storage_diff
from tests.reliability.summary import record, soak_factor

EXAMPLES = 15  # per operation and generation mode; `make soak` multiplies it


def test_the_description_is_valid_openapi_3():
    """openapi/passkey-guard.yaml validates against the OpenAPI 3.0 schema and every $ref resolves."""
    from schemathesis.specs.openapi.definitions import OPENAPI_30

    spec = load_spec()
    jsonschema.Draft4Validator(OPENAPI_30).validate(spec)
    refs = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.add(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec)
    for ref in refs:
        target: Any = spec
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
        assert isinstance(target, dict), ref


def test_every_error_response_is_the_error_envelope():
    """Every documented 4xx/5xx is the JSON envelope: {"error": {code, message}} on routes with an app role,
    {"error": {code}} alone on public ones, but the degraded health report (the health body itself)."""
    spec = load_spec()
    components = spec["components"]["responses"]
    public = spec["components"]["schemas"]["PublicError"]["properties"]["error"]
    assert public["required"] == ["code"] and set(public["properties"]) == {"code"}
    for (path, method), op in spec_operations(spec).items():
        envelope = "PublicError" if ROUTE_ACCESS[op["operationId"]] == "public" else "Error"
        for status, response in op["responses"].items():
            if int(status) < 400 or (path, method, status) == ("health", "GET", "503"):
                continue
            if "$ref" in response:
                response = components[response["$ref"].rsplit("/", 1)[-1]]
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": f"#/components/schemas/{envelope}"}, (path, method, status)


# ------------------------------------------------------------------------------------------ schemathesis
def _checks() -> list[Any]:
    """The schemathesis checks run on every answer (auth checks excluded: devhost has no Easy Auth in front
    to validate a token; the fuzz sends the principal header Easy Auth would add for an admin)."""
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    return [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
            response_schema_conformance]


class Fuzz:
    """Runs schemathesis in a worker thread against the app served on this event loop, checking every
    answer and taking a storage snapshot (on the loop) after each request."""

    def __init__(self, stack: Any, conn: str, loop: asyncio.AbstractEventLoop) -> None:
        self.stack, self.conn, self.loop = stack, conn, loop
        self.base_url = f"{stack.host.url}/api"
        self.counts: Counter[str] = Counter()
        self.by_status: Counter[int] = Counter()
        self.failures: list[str] = []
        self.writes_by_refused: list[dict[str, Any]] = []
        self.invalid_accepted: list[str] = []
        self.last: dict[str, Any] = {}

    def snapshot(self) -> dict[str, Any]:
        future = asyncio.run_coroutine_threadsafe(snapshot_storage(self.conn, self.stack.tenant_id), self.loop)
        return future.result(timeout=30)

    def items_rejected(self, case: Any, response: Any, sent: Any) -> bool:
        """A change-notification batch whose 202 counts exactly the items the oracle calls invalid as
        `rejected`: the product refuses such items one by one (tests/reliability/invalid.py)."""
        if not case.operation.path.endswith("/graph/notifications") or response.status_code != 202:
            return False
        raw = sent.encode() if isinstance(sent, str) else (sent or b"")
        expected = invalid.notification_items(raw, client_state=CLIENT_STATE, tenant_id=self.stack.tenant_id)
        try:
            rejected = response.json().get("rejected")
        except (ValueError, AttributeError):
            return False
        return expected is not None and expected > 0 and rejected == expected

    def one(self, case: Any, mode: str) -> None:
        import requests
        from schemathesis.core.failures import FailureGroup

        try:
            response = case.call(base_url=self.base_url, headers={PRINCIPAL_HEADER: ADMIN_PRINCIPAL}, timeout=30)
        except requests.RequestException as exc:
            self.failures.append(f"{case.operation.label}: transport {type(exc).__name__}")
            return
        status = response.status_code
        self.counts["sent"] += 1
        self.counts[f"{mode}:sent"] += 1
        self.by_status[status] += 1
        if status >= 500:
            self.counts["5xx"] += 1
        if status >= 400:
            self.counts["rejected"] += 1
            self.counts[f"{mode}:rejected"] += 1
        sent = response.request.body
        bad = invalid.openapi_case(case.operation.method, case.operation.path, case.path_parameters or {},
                                   str(response.request.url), sent.encode() if isinstance(sent, str) else sent,
                                   client_state=CLIENT_STATE, tenant_id=self.stack.tenant_id)
        self.counts["invalid:sent" if bad else "valid:sent"] += 1
        if status >= 400 or (bad and self.items_rejected(case, response, sent)):
            self.counts["invalid:rejected" if bad else "valid:rejected"] += 1
        elif bad:
            self.invalid_accepted.append(f"{case.operation.label} {status} path={case.path_parameters} "
                                         f"query={case.query} body={str(sent)[:160]}")
        try:
            case.validate_response(response, checks=_checks())
        except FailureGroup as group:
            self.failures.append(f"{case.operation.label} {status} {response.request.url}: {str(group)[:600]}")
        except AssertionError as exc:
            self.failures.append(f"{case.operation.label} {status}: {str(exc)[:600]}")
        after = self.snapshot()
        if status >= 400:
            diff = storage_diff(self.last, after)
            if diff:
                self.writes_by_refused.append({"operation": case.operation.label, "status": status, "diff": diff})
        self.last = after

    def _test(self, strategy: Any, label: str, examples: int) -> Any:
        @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def fuzz(case: Any) -> None:
            self.one(case, label)

        return fuzz

    def run(self, examples: int) -> None:
        import schemathesis
        from schemathesis import GenerationMode

        schema = schemathesis.openapi.from_path(SPEC)
        self.last = self.snapshot()
        for result in schema.get_all_operations():
            operation = result.ok()
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                try:
                    strategy = operation.as_strategy(generation_mode=mode)
                except Exception:  # nothing to negate (e.g. GET /health has no inputs)
                    self.counts["noNegativeCases"] += 1
                    continue
                fuzz = self._test(strategy, mode.value, examples)
                try:
                    fuzz()
                except Exception as exc:  # hypothesis gave up generating, e.g. an unsatisfiable negation
                    if type(exc).__name__ not in ("Unsatisfiable", "FailedHealthCheck"):
                        raise
                    self.counts["unsatisfiable"] += 1


async def test_schemathesis_finds_no_5xx_no_spec_breach_and_no_write_by_a_refused_request(azurite):
    """Positive and negative cases for every operation, served by devhost over the real stack: no 5xx,
    every answer conforms to the description, and no refused (4xx) request changed a table or the queue."""
    users = [user(n) for n in range(1, 6)]
    async with running_stack(azurite, tenant(users), drain=False) as stack:
        await sweep(stack.services)
        stack.sim.control("POST", "users/bulk_rename", {"notify": False, "users": [
            {"id": uid(n), "userPrincipalName": f"user{n}@fabrikam.example"} for n in (1, 2)]})
        await sweep(stack.services)
        from shared.upn.processor import process_users

        await process_users(stack.services, [{"id": uid(1)}, {"id": uid(2)}], source="sweep")  # flags to list
        fuzz = Fuzz(stack, azurite.connection_string, asyncio.get_running_loop())
        started = time.monotonic()
        await asyncio.to_thread(fuzz.run, EXAMPLES * soak_factor())
        seconds = round(time.monotonic() - started, 1)
        # Bad inputs are the cases the oracle (tests/reliability/invalid.py) calls invalid, whichever mode made
        # them: a "negative" case may well be valid (an omitted optional parameter, an ignored header), and a
        # "positive" one forged (a notification without our clientState, an unsigned ticket).
        record("openapi_fuzz", area="fuzz", bad_inputs=fuzz.counts["invalid:sent"],
               rejected=fuzz.counts["invalid:rejected"], data_lost=len(fuzz.writes_by_refused),
               detail={"requests": fuzz.counts["sent"], "negativeCases": fuzz.counts["negative:sent"],
                       "validRefused": fuzz.counts["valid:rejected"], "invalidAccepted": fuzz.invalid_accepted[:10],
                       "negativeRejected": fuzz.counts["negative:rejected"], "serverErrors": fuzz.counts["5xx"],
                       "specBreaches": len(fuzz.failures), "byStatus": dict(sorted(fuzz.by_status.items())),
                       "seconds": seconds})
        assert fuzz.counts["sent"] > 100
        assert not fuzz.failures, "\n\n".join(fuzz.failures[:5])
        assert fuzz.counts["5xx"] == 0, fuzz.by_status
        assert not fuzz.writes_by_refused, json.dumps(fuzz.writes_by_refused[:3], default=str)[:3000]
