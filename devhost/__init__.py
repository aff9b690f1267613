"""Developer host: loopback stand-ins for what Azure provides (never deployed).

`devhost.azurite` starts and stops a private Azurite (Table, Queue and Blob emulator) by PID on free
ports; `devhost.stack` builds the whole local stack (Azurite, the Graph simulator, the product's Services,
the function app served by `devhost.host`) one way for the tests, benchmarks, `devhost up` and `make demo`.
"""
from __future__ import annotations
