"""Developer host: loopback stand-ins for what Azure provides (never deployed).

`devhost.azurite` starts and stops a private Azurite (Table, Queue and Blob emulator) by PID on free
ports for tests, benchmarks and `make demo`; the other modules stand in for the Functions host.
"""
from __future__ import annotations
