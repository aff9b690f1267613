"""Microsoft's published payloads (see README.md here), filled in for a test and decoded the way the host does.

`load` reads one file with its placeholders filled in; `event_grid_event` turns a delivered event into what the
Event Grid trigger receives (azure-functions' own converter); `http_request` builds the `func.HttpRequest` of an
HTTP trigger through the library's HTTP converter, and `timer_request` a timer's `func.TimerRequest` through its
timer converter.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import azure.functions as func
from azure.functions import meta
from azure.functions.eventgrid import EventGridEventInConverter
from azure.functions.http import HttpRequestConverter
from azure.functions.timer import TimerRequestConverter

HERE = Path(__file__).resolve().parent
APPLICATION_ID = "7d0e2b53-4f7b-4c8e-9a51-3f1e0c9b2a10"
SUBSCRIPTION_ID = "4f1c6f8e-22b1-4a3e-b8c5-1f5e2a9d7c31"


def load(name: str, *, tenant_id: str, client_state: str, user_id: str = "00000000-0000-4000-8000-000000000000",
         subscription_id: str = SUBSCRIPTION_ID, application_id: str = APPLICATION_ID) -> Any:
    """The JSON of `name` (without .json) with the placeholders replaced by these values."""
    text = (HERE / f"{name}.json").read_text(encoding="utf-8")
    for placeholder, value in (("<tenant-id>", tenant_id), ("<application-id>", application_id),
                               ("<user-id>", user_id), ("<microsoft-graph-subscription-id>", subscription_id),
                               ("<guid>", client_state)):
        text = text.replace(placeholder, json.dumps(value)[1:-1])
    return json.loads(text)


def wire(payload: Any) -> bytes:
    """A payload as the bytes on the wire."""
    return json.dumps(payload).encode("utf-8")


def event_grid_event(event: dict[str, Any]) -> Any:
    """What the Event Grid trigger receives for one delivered event: the library's converter decodes the JSON
    (a CloudEvents 1.0 event becomes `func.CloudEvent`, an Event Grid schema one `func.EventGridEvent`)."""
    return EventGridEventInConverter.decode(meta.Datum(json.dumps(event), "json"), trigger_metadata=None)


def http_request(method: str, url: str, *, body: bytes = b"", headers: dict[str, str] | None = None,
                 params: dict[str, str] | None = None, route_params: dict[str, str] | None = None
                 ) -> func.HttpRequest:
    """The `func.HttpRequest` the host hands an HTTP trigger, built by the library's HTTP converter."""
    def strings(values: dict[str, str] | None) -> dict[str, meta.Datum]:
        return {k: meta.Datum(v, "string") for k, v in (values or {}).items()}

    datum = meta.Datum({"method": meta.Datum(method, "string"), "url": meta.Datum(url, "string"),
                        "headers": strings(headers), "query": strings(params), "params": strings(route_params),
                        "body": meta.Datum(body, "bytes")}, "http")
    request: func.HttpRequest = HttpRequestConverter.decode(datum, trigger_metadata=None)
    return request


def validation_request(url: str) -> func.HttpRequest:
    """Graph's validation POST to `url` (the handshake of a new subscription), as published."""
    doc = load("validation-request", tenant_id="", client_state="")
    return http_request(doc["method"], url, body=doc["body"].encode(), headers=doc["headers"], params=doc["query"])


def timer_request(*, past_due: bool = False) -> func.TimerRequest:
    """The `func.TimerRequest` the host hands a timer trigger: its JSON (`Schedule`, `ScheduleStatus`, `IsPastDue`,
    as the host writes it with `use_monitor`) decoded by the library's timer converter."""
    doc = {"Schedule": {"AdjustForDST": True}, "IsPastDue": past_due,
           "ScheduleStatus": {"Last": "2026-01-01T03:30:00+00:00", "Next": "2026-01-02T03:30:00+00:00",
                              "LastUpdated": "2026-01-01T03:30:00+00:00"}}
    request: func.TimerRequest = TimerRequestConverter.decode(meta.Datum(json.dumps(doc), "json"),
                                                              trigger_metadata=None)
    return request
