"""The simulator's knobs: throttling, faults, paging, notifications.

Set from the tenant file's `simulator` object at start and changed at run time with
`PATCH /_sim/config`; `GET /_sim/config` returns them all. Unknown names and wrong types are refused
so a typo in a test cannot silently leave a knob at its default.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

#: The latency benchmarks run with unless told otherwise (issue 13: median 150 ms, p99 800 ms). Graph
#: publishes no latency figures; 150/800 is the issue's reading of field reports. 2 ms per object makes a
#: 100-user page about 0.35 s and a 999-user page about 2.1 s at the median, in line with the few seconds
#: people report for full `$top=999` pages (an estimate, not a published figure).
REALISTIC_LATENCY: dict[str, float] = {"latency_ms": 150.0, "latency_p99_ms": 800.0, "latency_per_item_ms": 2.0}


@dataclass
class SimConfig:
    """All run-time knobs, with Graph's documented values as defaults where Graph has one."""

    # Resource-unit bucket per app and tenant (Graph, large tenant: 8,000 RU per 10 s, starts full).
    throttle_enabled: bool = True
    throttle_capacity_ru: float = 8000.0
    throttle_refill_ru_per_s: float = 800.0
    throttle_scale: float = 1.0              # multiplies capacity and refill of both buckets
    throttle_charge_rejected: bool = True    # "usage still counts while throttled"
    # Writes per app and tenant: 3,000 per 2 min 30 s.
    write_capacity: float = 3000.0
    write_refill_per_s: float = 20.0
    # Conditional Access: 1 request/s per tenant across all apps, 429 without Retry-After. <= 0 disables.
    ca_requests_per_second: float = 1.0
    # Authentication-method calls (issue 13 item 2): `users/{id}/authentication/*` per tenant, all apps, each
    # `$batch` item counted; 429 with Retry-After like the RU bucket. Graph publishes no figure; a public
    # report of a 10,000-user `authentication/methods` inventory (over an hour sequentially, ~30 min with 16
    # threads: about 5-6 calls/s at best) gives the pessimistic 6/s. A bucket of `auth_methods_rps *
    # auth_methods_window_s` calls, starting full, refilled at `auth_methods_rps`. <= 0 disables.
    auth_methods_rps: float = 6.0
    auth_methods_window_s: float = 1.0
    # Latency (issue 13 item 1), never on /_sim/*. Each Graph answer, and each `$batch` item inside its
    # envelope, waits a log-normal draw whose median is `latency_ms` and whose 99th percentile is
    # `latency_p99_ms` (a p99 at or below the median means a fixed `latency_ms`), plus `latency_per_item_ms`
    # for every object in a collection answer and every request in a `$batch`. 0 keeps tests exact;
    # benchmarks use REALISTIC_LATENCY below. Draws follow `fault_seed`.
    latency_ms: float = 0.0
    latency_p99_ms: float = 0.0
    latency_per_item_ms: float = 0.0
    # Injected faults (0..1 rates), never on /_sim/*.
    graph_paused: bool = False               # hold every Graph request until unpaused (a stall of no set length)
    fault_429_rate: float = 0.0
    fault_429_retry_after_s: int = 1
    fault_503_rate: float = 0.0
    fault_504_rate: float = 0.0
    fault_drop_rate: float = 0.0
    fault_seed: int | None = None
    # Paging.
    users_page_size: int = 100
    delta_page_size: int = 200
    delta_token_ttl_s: float = 7 * 24 * 3600.0
    # $batch.
    batch_shuffle_responses: bool = True
    batch_allow_absolute_urls: bool = False  # Graph answers absolute item URLs with a 400
    # Whole `$batch` envelopes answered 429 (Retry-After `fault_429_retry_after_s`) or 503 before any item
    # runs (issue 13 item 6; Graph's gateway can refuse the envelope itself). Draws follow `fault_seed`.
    fault_batch_429_rate: float = 0.0
    fault_batch_503_rate: float = 0.0
    # Change notifications.
    notify_batch_window_s: float = 0.2
    notify_max_per_post: int = 100
    notify_timeout_s: float = 3.0
    notify_retry_count: int = 3
    notify_retry_backoff_s: float = 0.5
    notify_drop_rate: float = 0.0
    notify_paused: bool = False
    validation_timeout_s: float = 10.0
    subscription_quota_per_app: int = 100
    # Application.Read.All: false withholds it from every token (graphsim/permissions.py), so servicePrincipals
    # reads, and CA writes naming an application id, answer Graph's 403, as for an app without it.
    application_read_granted: bool = True
    # --- Permissions (issue 13 item 3; graphsim/permissions.py holds the route table) ---
    # What an opaque (non-JWT) bearer token grants: "all" (the contract tests' "contract-test" token) or "none"
    # (the pessimistic setting: only a JWT's `roles`/`scp` claims grant anything).
    opaque_token_roles: str = "all"  # noqa: S105 (a knob value, not a secret)
    # Issue 13 item 5, delta. Graph publishes no bound on how soon delta shows a write, and documents that
    # delta may return an object more than once. Both default to off because the contract tests want a
    # change visible at once and exactly once; benchmarks and the sweep tests opt in.
    delta_visibility_delay_s: float = 0.0    # a change shows in delta only once it is this old (sim clock)
    delta_replay_rate: float = 0.0           # share of live users returned again in each incremental round
    # Issue 13 item 9, tenants with passkey profiles: the top level mirrors the default profile; what a PATCH
    # of the legacy top-level fields does there is unpublished (graphsim/passkey_profiles.py). "ignore" (a
    # silent no-op, the harshest for a client: tests and benchmarks that opt in), "reject" (400) or
    # "apply-to-default" (the default only because the contract tests PATCH the legacy keyRestrictions of a
    # profiles tenant and read them back changed).
    legacy_patch_in_profiles_tenant: str = "apply-to-default"
    # Issue 13 item 8, reports/authenticationMethods/userRegistrationDetails (graphsim/api_reports.py). The
    # report is a snapshot refreshed this often on the sim clock (Graph publishes no interval: a day is the
    # pessimistic guess; <= 0 always fresh); reports are limited to 5 requests per 10 s per app and tenant
    # (Graph's throttling limits for reports listing authenticationMethod; <= 0 off); page size unpublished.
    registration_report_refresh_s: float = 86400.0
    reports_requests_per_10s: float = 5.0
    registration_report_page_size: int = 100
    # Issue 13 item 7, subscriptions (graphsim/reauth.py, graphsim/endpoint_health.py; all on the sim clock).
    # reauthorizationRequired arrives unprompted reauth_lead_s before expiry (subscriptions with a lifecycle URL
    # only; <= 0 off), again every reauth_repeat_s (Graph's illustrative code: every 15 min in the last hour);
    # left unanswered reauth_pause_after_s, change notifications pause and are lost until answered (< 0 never).
    reauth_lead_s: float = 3600.0
    reauth_repeat_s: float = 900.0
    reauth_pause_after_s: float = 900.0
    # Slow endpoints, per notification URL (Graph's webhook throttling): > notify_slow_ms is slow (failures
    # count as slow too); judged once notify_health_min_samples responses are in the window; >= delay % holds
    # notifications notify_throttle_delay_s, >= drop % drops them; the tally resets every window. Retries stop
    # notify_retry_window_s after the first attempt ("for up to 4 hours").
    notify_slow_ms: float = 2900.0
    notify_health_min_samples: int = 100
    notify_slow_delay_pct: float = 10.0
    notify_slow_drop_pct: float = 15.0
    notify_health_window_s: float = 600.0
    notify_throttle_delay_s: float = 600.0
    notify_retry_window_s: float = 4 * 3600.0

    def update(self, knobs: dict[str, Any]) -> list[str]:
        """Apply `knobs` after checking every name and type; returns the names changed.

        Raises ValueError naming the first bad knob, and then changes nothing.
        """
        types = {f.name: f.type for f in fields(self)}
        checked: dict[str, Any] = {}
        for name, value in knobs.items():
            if name not in types:
                raise ValueError(f"unknown simulator knob {name!r}")
            checked[name] = _coerce(name, str(types[name]), value)
        for name, value in checked.items():
            setattr(self, name, value)
        return sorted(checked)

    def as_dict(self) -> dict[str, Any]:
        """All knobs as plain JSON values."""
        return asdict(self)


#: The values a text knob may take.
_CHOICES: dict[str, tuple[str, ...]] = {
    "opaque_token_roles": ("all", "none"),
    "legacy_patch_in_profiles_tenant": ("ignore", "reject", "apply-to-default"),
}


def _coerce(name: str, type_name: str, value: Any) -> Any:
    """Check one knob value against its declared type (bools are not numbers here)."""
    if "None" in type_name and value is None:
        return None
    if type_name.startswith("bool"):
        if isinstance(value, bool):
            return value
    elif type_name.startswith("int"):
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 0:
                raise ValueError(f"knob {name!r} must be >= 0")
            return value
    elif type_name.startswith("str"):
        choices = _CHOICES.get(name)
        if isinstance(value, str) and (choices is None or value in choices):
            return value
        if isinstance(value, str):
            raise ValueError(f"knob {name!r} is one of {list(choices or ())}")
    elif type_name.startswith("float"):
        if isinstance(value, int | float) and not isinstance(value, bool):
            if value < 0:
                raise ValueError(f"knob {name!r} must be >= 0")
            if name.endswith("_rate") and value > 1:
                raise ValueError(f"knob {name!r} is a rate between 0 and 1")
            return float(value)
    raise ValueError(f"knob {name!r} has the wrong type ({type_name} expected)")
