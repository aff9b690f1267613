"""Passkey Guard's Microsoft Graph simulator (tests and benchmarks only; never deployed).

An aiohttp server on loopback that answers the Graph v1.0 calls Passkey Guard makes, with Graph's
shapes, errors, paging, delta, change notifications, `$batch` and throttling. Start it with
`python -m graphsim --port P --tenant FILE` or `graphsim.launcher.start_simulator(...)`.
"""
from __future__ import annotations

from graphsim.launcher import Simulator, start_simulator

__all__ = ["Simulator", "start_simulator"]
