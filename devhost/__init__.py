"""Developer host: loopback stand-ins for what Azure provides (never deployed).

`devhost.azurite` starts and stops a private Azurite (Table, Queue and Blob emulator) by PID for tests,
benchmarks and `make demo`.
"""
from __future__ import annotations
