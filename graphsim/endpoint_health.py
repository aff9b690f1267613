"""How Graph throttles a slow or failing notification endpoint (change-notifications-delivery-webhooks,
"Throttling"), per notification URL across all subscriptions.

Graph publishes with a 3-second timeout; a response slower than 2,900 ms is slow. Once the endpoint has
had 100 responses, it is judged on the share of slow ones: 10 % or more and it is a *slow* endpoint,
whose notifications wait 10 minutes (failed ones are retried in 10 minutes); 15 % or more and they are
*dropped*. The evaluation runs continuously and the tally is flushed every 10 minutes. Graph does not say
whether a failed delivery (a 5xx, a closed connection) counts as slow: the simulator counts it as slow,
the harsher reading. Every number is a knob (`notify_slow_ms`, `notify_health_min_samples`,
`notify_slow_delay_pct`, `notify_slow_drop_pct`, `notify_health_window_s`, `notify_throttle_delay_s`), so
tests scale them down; the windows run on the simulator's clock.
"""
from __future__ import annotations

from dataclasses import dataclass

from graphsim.config import SimConfig

NORMAL, SLOW, DROP = "normal", "slow", "drop"


@dataclass
class EndpointHealth:
    """The tally of one notification URL since its window started (a time on the simulator's clock)."""

    started: float
    responses: int = 0
    slow: int = 0

    def _roll(self, now: float, config: SimConfig) -> None:
        if now - self.started >= config.notify_health_window_s:
            self.started, self.responses, self.slow = now, 0, 0

    def record(self, now: float, seconds: float, ok: bool, config: SimConfig) -> None:
        """Count one response that took `seconds` (real time) and did (`ok`) or did not answer 2xx."""
        self._roll(now, config)
        self.responses += 1
        if not ok or seconds * 1000.0 > config.notify_slow_ms:
            self.slow += 1

    def state(self, now: float, config: SimConfig) -> str:
        """`normal`, `slow` (delay new notifications) or `drop` (lose them), from the current window."""
        self._roll(now, config)
        if self.responses < max(1, config.notify_health_min_samples):
            return NORMAL
        share = 100.0 * self.slow / self.responses
        if share >= config.notify_slow_drop_pct:
            return DROP
        if share >= config.notify_slow_delay_pct:
            return SLOW
        return NORMAL
