"""Passkey Guard: keeps an Entra tenant's passkey (FIDO2) policy as decided, and catches UPN changes
that silently break users' passkeys. `function_app.py` wires triggers to the use cases in here."""
from __future__ import annotations

__version__ = "0.1.0"
