"""Is this input invalid? The reliability figures' oracle, independent of the code under test.

"Bad inputs" counts only inputs this module calls invalid, and "rejected" only those of them that were
refused, so an invalid input the product accepts shows as a gap between the two, and a valid input that a
fuzzer happened to generate is not counted at all. The judgement comes from the published contracts, read
with the `jsonschema` validator: the OpenAPI description (openapi/passkey-guard.yaml) for HTTP bodies and
query parameters, the desired-state JSON Schema for documents, plus strict JSON (RFC 8259: UTF-8, no NaN)
and the few rules those contracts write in prose (our clientState and tenant, our own page tokens, valid
Unicode text). Where the contracts say nothing, the input is not judged (`None`) and is not counted.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Collection, Mapping
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "openapi" / "passkey-guard.yaml"
DOCUMENT_SCHEMA = ROOT / "shared" / "policy" / "desired-state.schema.json"
USER_EVENTS = {"microsoft.graph.userupdated", "microsoft.graph.userdeleted"}
_SURROGATE = re.compile("[\ud800-\udfff]")
_NOT_JSON = object()


@cache
def _spec() -> dict[str, Any]:
    return dict(yaml.safe_load(SPEC.read_text(encoding="utf-8")))


def _component(name: str) -> dict[str, Any]:
    """A component schema of the OpenAPI description, its `#/components/...` references resolvable."""
    return {"$ref": f"#/components/schemas/{name}", "components": _spec()["components"]}


def _parameter(name: str) -> dict[str, Any]:
    return dict(_spec()["components"]["parameters"][name]["schema"])


def conforms(value: Any, schema: Mapping[str, Any]) -> bool:
    """True when `value` is valid against `schema` (OpenAPI 3.0 schemas are JSON Schema draft 4 here)."""
    return jsonschema.Draft4Validator(schema).is_valid(value)


def has_lone_surrogate(value: Any) -> bool:
    """Anywhere in `value` a string that is not valid Unicode text (a lone surrogate)."""
    if isinstance(value, str):
        return bool(_SURROGATE.search(value))
    if isinstance(value, Mapping):
        return any(has_lone_surrogate(k) or has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_lone_surrogate(v) for v in value)
    return False


def strict_json(raw: bytes, *, text: bool = True) -> Any:
    """The JSON value of `raw` under RFC 8259 (UTF-8, no NaN or Infinity), or _NOT_JSON; with `text`, also no
    escaped lone surrogate (I-JSON, RFC 7493: strings are Unicode text)."""
    def no_constants(name: str) -> Any:
        raise ValueError(name)
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return _NOT_JSON
    return _NOT_JSON if text and has_lone_surrogate(value) else value


def json_object_body(raw: bytes) -> bool:
    """An HTTP JSON body that is not a JSON object (RFC 8259) is invalid: every route's body is an object. What
    its strings hold is each route's schema's business, judged by `body`. No body at all is valid: the
    description lets verify and plan go without one."""
    if not raw.strip():
        return False
    value = strict_json(raw, text=False)
    return value is _NOT_JSON or not isinstance(value, dict)


def body(component: str, raw: bytes) -> bool:
    """A request body that is not strict JSON or breaks its OpenAPI component schema."""
    value = strict_json(raw)
    return value is _NOT_JSON or not conforms(value, _component(component))


def notification_body(component: str, raw: bytes, *, client_state: str, tenant_id: str) -> bool:
    """A (lifecycle) notification POST: breaks the schema, or an item is forged (another clientState or tenant)."""
    if body(component, raw):
        return True
    items = json.loads(raw)["value"]
    return any(item.get("clientState") != client_state or str(item.get("tenantId", "")).lower() != tenant_id.lower()
               for item in items)


def notification_items(raw: bytes, *, client_state: str, tenant_id: str) -> int | None:
    """How many items of a change-notification POST are invalid (break the ChangeNotification schema, or are
    forged), or None when the POST is invalid as a whole (not strict JSON, or not an object with a `value`
    list). The product's batch rule drops such items one by one and counts them in its answer's `rejected`,
    so an item, not the whole batch, is what it refuses."""
    value = strict_json(raw)
    if value is _NOT_JSON or not isinstance(value, dict) or not isinstance(value.get("value"), list):
        return None
    if not conforms({**value, "value": []}, _component("ChangeNotifications")):
        return None
    items = value["value"]
    item_schema = _component("ChangeNotification")
    return sum(1 for item in items if not conforms(item, item_schema) or item.get("clientState") != client_state
               or str(item.get("tenantId", "")).lower() != tenant_id.lower())


def query_invalid(route: str, params: Mapping[str, str], *, issued_tokens: Collection[str] = ()) -> bool:
    """Query parameters of GET /flags, /flags/export or /runs: a known parameter breaking its schema (an
    integer is ASCII digits), or a page token this server never issued. Unknown parameters are ignored, and an
    empty value is no value (as a route reads the query)."""
    limits = {"flags": "FlagsLimit", "runs": "RunsLimit"}
    for name, value in params.items():
        if value == "":
            continue
        if name == "limit" and route in limits:
            # ASCII digits only; past 20 digits it is out of any bound the description sets
            if not re.fullmatch(r"-?[0-9]{1,20}", value) or not conforms(int(value), _parameter(limits[route])):
                return True
        elif name == "status" and route.startswith("flags"):
            if not conforms(value, _component("FlagStatus")):
                return True
        elif name == "pageToken" and route in limits and value not in issued_tokens:
            return True
    return False


def validation_params(params: Mapping[str, str]) -> bool:
    """A handshake whose `validationToken` breaks the description's schema (1..2048 characters, no controls)."""
    return "validationToken" in params and not conforms(params["validationToken"], _parameter("ValidationToken"))


def ticket_fields(fields: Mapping[str, Any]) -> bool:
    """A ticket body breaking the TicketEvent schema, or holding text that is not valid Unicode."""
    return has_lone_surrogate(fields) or not conforms(dict(fields), _component("TicketEvent"))


def desired_state_text(raw: bytes) -> bool:
    """A desired-state file that is not strict JSON or breaks desired-state.schema.json."""
    value = strict_json(raw)
    if value is _NOT_JSON:
        return True
    schema = json.loads(DOCUMENT_SCHEMA.read_text(encoding="utf-8"))
    return not jsonschema.validators.validator_for(schema)(schema).is_valid(value)


def event_grid(event_type: str, data: Any, *, client_state: str | None, tenant_id: str) -> bool | None:
    """A Graph user event delivered through Event Grid: invalid when its data is not an object of valid text
    or is forged (another clientState when one is set, another tenant). Other event types are not ours to
    judge (the product ignores them), nor is the rest of the data's shape: None."""
    if not isinstance(event_type, str) or event_type.casefold() not in USER_EVENTS:
        return None
    if not isinstance(data, dict) or has_lone_surrogate(data):
        return True
    if client_state is not None and data.get("clientState") != client_state:
        return True
    tenant = data.get("tenantId")
    if isinstance(tenant, str) and tenant.lower() != tenant_id.lower():
        return True
    return None


def queue_message(raw: bytes, *, tenant_id: str) -> bool | None:
    """A change-queue message: invalid when not a JSON object, of no known kind, without a tenant, or (for
    `users`) without 1 to 20 entries that each name a string id. A well-formed message for another tenant is
    valid (it is dropped). Anything else the producers' contract leaves to the model: None."""
    value = strict_json(raw)
    if value is _NOT_JSON or not isinstance(value, dict):
        return True
    if value.get("kind") not in ("users", "lifecycle") or not isinstance(value.get("tenant"), str):
        return True
    if value["kind"] == "users":
        users = value.get("users")
        if not isinstance(users, list) or not 1 <= len(users) <= 20:
            return True
        if any(not isinstance(u, dict) or not isinstance(u.get("id"), str) for u in users):
            return True
    return None


def page_token(kind: str, token: str) -> bool:
    """Not one of our page tokens: base64url of a JSON object naming this listing (`k`) and the last key
    returned (`after`, non-empty text)."""
    try:
        decoded = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return True
    value = strict_json(decoded)
    return (value is _NOT_JSON or not isinstance(value, dict) or value.get("k") != kind
            or not isinstance(value.get("after"), str) or not value["after"])


def post(path: str, raw: bytes, *, client_state: str, tenant_id: str) -> bool:
    """A POST to `path` (relative to /api): its OpenAPI body schema, our clientState and tenant for
    notifications, desired-state.schema.json for an ad-hoc document; an unsigned ticket is forged."""
    if path in ("graph/notifications", "graph/lifecycle"):
        component = "ChangeNotifications" if path == "graph/notifications" else "LifecycleNotifications"
        return notification_body(component, raw, client_state=client_state, tenant_id=tenant_id)
    if path == "tickets":
        value = strict_json(raw)
        return not isinstance(value, dict) or ticket_fields(value)
    if path == "policy/apply":
        return body("ApplyBody", raw)
    if path == "flags/approve-removal":
        return body("ApprovalBody", raw)
    if not raw.strip():
        return False  # verify and plan need no body
    if body("DocumentBody", raw):
        return True
    document = json.loads(raw).get("document")
    return document is not None and desired_state_text(json.dumps(document).encode())


def openapi_case(method: str, path: str, path_parameters: Mapping[str, Any], url: str, raw_body: bytes | None, *,
                 client_state: str, tenant_id: str, signed: bool = False) -> bool:
    """A request a fuzzer (schemathesis) built for `method path` of the description: invalid when a declared
    input breaks its schema or the request is forged. Schemathesis's "negative" cases are not all invalid
    (an omitted optional parameter, an ignored header, a handshake whose body is never read), so each case
    is judged here, whatever mode made it. Headers other than the ticket's signature are not inputs: the
    principal comes from App Service Authentication. The query is judged as it went over the wire (`url`) and
    as a route reads it: the first value of each parameter, an empty value being no value, unknown ones ignored."""
    route = path.strip("/")
    params: dict[str, str] = {}
    for name, value in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        params.setdefault(name, value)
    if route.startswith("runs/"):
        run_id = path_parameters.get("runId")
        return not isinstance(run_id, str) or not re.fullmatch(r"[0-9a-f]{32}", run_id)
    if method.upper() == "GET":
        return route in ("runs", "flags", "flags/export") and query_invalid(route, params)
    if route in ("graph/notifications", "graph/lifecycle") and "validationToken" in params:
        return validation_params(params)  # a handshake: the body is not read
    if route == "tickets" and not signed:
        return True  # no valid HMAC: forged
    return post(route, raw_body or b"", client_state=client_state, tenant_id=tenant_id)
