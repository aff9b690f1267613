"""What every policy use case starts from: the desired state (the request's document, or the file POLICY_FILE
names) and the tenant's current policy state, read from Graph as raw JSON (shared/graph/policy_reads.py)."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.errors import ConfigError
from shared.graph.policy_reads import read_ca_policies_raw, read_fido2_raw, read_groups, read_strengths_raw
from shared.policy.document import DesiredState, parse_document, validate_document
from shared.services import Services


def load_desired(services: Services, document: Any = None) -> DesiredState:
    """The desired state: the request's document when given, else the file POLICY_FILE names."""
    if document is not None:
        return validate_document(document)
    path = Path(services.settings.policy_file)
    try:
        text = path.read_bytes()
    except OSError:
        raise ConfigError(f"setting POLICY_FILE names {path}, which cannot be read") from None
    return parse_document(text)


@dataclass
class TenantState:
    """The tenant's current policy state as raw Graph JSON."""

    fido2: dict[str, Any]
    strengths: list[dict[str, Any]]
    ca: list[dict[str, Any]]
    groups: dict[str, dict[str, Any] | None]

    def snapshot(self) -> dict[str, Any]:
        return {"fido2": self.fido2, "strengths": self.strengths, "conditionalAccess": self.ca}


async def read_state(services: Services, desired: DesiredState) -> TenantState:
    """Everything a plan or a verification looks at, read in parallel where Graph allows."""
    graph = services.graph
    fido2, strengths, groups = await asyncio.gather(
        read_fido2_raw(graph),
        read_strengths_raw(graph, with_configurations_for=desired.authentication_strength.display_name),
        read_groups(graph, desired.group_ids()))
    ca = await read_ca_policies_raw(graph) if desired.conditional_access is not None else []
    return TenantState(fido2=fido2, strengths=strengths, ca=ca, groups=groups)
