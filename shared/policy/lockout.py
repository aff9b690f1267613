"""The lockout impact of a plan: which registered passkeys would stop working once it is applied (no I/O).

The caller reads users' `fido2Methods` (shared/graph/policy_reads.py) and hands them in as raw JSON.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from shared.ids import is_guid
from shared.policy.aaguids import aaguid_key, name_of
from shared.policy.current import aaguid_allowed
from shared.policy.plan_model import LockoutRow, Plan


def _strength_accepts(summary: Mapping[str, Any], aaguid: str) -> bool:
    if not summary.get("acceptsFido2"):
        return False
    allowed = summary.get("allowedAaguids")
    return allowed is None or aaguid_key(aaguid) in {aaguid_key(a) for a in allowed}


def lockout_impact(plan: Plan, passkeys_by_user: Mapping[str, Sequence[Mapping[str, Any]]],
                   upn_by_user: Mapping[str, str]) -> list[LockoutRow]:
    """Every registered passkey that works today and would not after the plan.

    `passkeys_by_user` maps a user id to the raw `fido2Methods` JSON (`id`, `aaGuid`, `model`…). A row's
    scope is "method" when the method policy would reject the key, "strength" when the key still signs in
    but no longer satisfies the authentication strength. Users in sorted id order, keys as given.
    """
    rows: list[LockoutRow] = []
    mb, ma = plan.method_before, plan.method_after
    sb, sa = plan.strength_before, plan.strength_after
    for user_id in sorted(passkeys_by_user):
        for method in passkeys_by_user[user_id]:
            aaguid = method.get("aaGuid")
            aaguid = aaguid if isinstance(aaguid, str) else ""
            scope = None
            if mb is not None and ma is not None and aaguid_allowed(mb, aaguid) and not aaguid_allowed(ma, aaguid):
                scope = "method"
            elif sb is not None and sa is not None and _strength_accepts(sb, aaguid) and not _strength_accepts(
                    sa, aaguid):
                scope = "strength"
            if scope is None:
                continue
            model = method.get("model")
            pid = method.get("id")
            rows.append(LockoutRow(
                user_id=user_id, upn=upn_by_user.get(user_id), passkey_id=pid if isinstance(pid, str) else None,
                aaguid=normalise(aaguid), name=name_of(aaguid, plan.aaguid_names) if aaguid else "(no AAGUID)",
                model=model if isinstance(model, str) else None, scope=scope))
    return rows


def normalise(aaguid: str) -> str:
    """Lowercase a GUID, leave anything else as it is."""
    return aaguid.lower() if is_guid(aaguid) else aaguid


def attach_lockout(plan: Plan, passkeys_by_user: Mapping[str, Sequence[Mapping[str, Any]]],
                   upn_by_user: Mapping[str, str]) -> Plan:
    """A copy of `plan` with `lockout` filled by `lockout_impact` and marked evaluated."""
    return dataclasses.replace(plan, lockout=lockout_impact(plan, passkeys_by_user, upn_by_user),
                               lockout_evaluated=True)
