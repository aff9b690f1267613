"""Writes of the tenant's policy objects: one planned write (shared/policy/plan_model.py) becomes one Graph request.

A planned write says what it does (`op`), which object (`strengthId`, `configurationId`, `policyId`) and
the body; the method and path come from `policy_paths.write_request`. Every body is the plan's own, built
fresh, never an object that came from a GET (graph-contract pitfall 1):

- the FIDO2 configuration and Conditional Access policies are sent as the plan's JSON through the SDK's
  own request adapter (`send_raw`), because the SDK models drop a multi-value `passkeyTypes` and unknown
  fields of profiles and CA conditions (pitfalls 1-3);
- strengths and their combination configurations go through the SDK's typed models, which carry
  everything they need; only a rollback's multi-method `allowedCombinations` ("password,sms"), which the
  SDK's enum cannot write (pitfall 3), goes as raw JSON.

Conditional Access allows one request per second per tenant and answers 429 with no Retry-After, so every
CA write waits its turn on a `CaPacer`.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from shared.graph.gateway import GraphGateway
from shared.graph.policy_paths import write_request

if TYPE_CHECKING:
    from msgraph.generated.models.authentication_method_modes import AuthenticationMethodModes
    from msgraph.generated.policies.authentication_strength_policies.item.authentication_strength_policy_item_request_builder import (  # noqa: E501
        AuthenticationStrengthPolicyItemRequestBuilder,
    )

CA_MIN_INTERVAL = 1.05  # Conditional Access allows one request per second per tenant, with no Retry-After
CA_OPS = ("create_ca_policy", "update_ca_policy", "delete_ca_policy")
RAW_OPS = ("patch_fido2", *CA_OPS)


class CaPacer:
    """Spaces Conditional Access calls at least CA_MIN_INTERVAL apart (CA answers 429 with no Retry-After).

    `clock` and `sleep` are the monotonic clock and the wait it uses (tests pass a simulated pair)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._last: float | None = None
        self._clock = clock
        self._sleep = sleep

    async def turn(self) -> None:
        """Wait until CA_MIN_INTERVAL has passed since the previous turn (the first turn does not wait)."""
        if self._last is not None:
            wait = self._last + CA_MIN_INTERVAL - self._clock()
            if wait > 0:
                await self._sleep(wait)
        self._last = self._clock()


async def send_write(graph: GraphGateway, write: dict[str, Any], ca: CaPacer) -> str | None:
    """Send one planned write; returns the id of a created object, when Graph gives one."""
    op = write["op"]
    if op in RAW_OPS:
        return await _send_raw_write(graph, write, ca)
    if op == "create_strength":
        return await _create_strength(graph, write.get("body") or {})
    await _send_strength_write(graph, write)
    return None


async def _send_raw_write(graph: GraphGateway, write: dict[str, Any], ca: CaPacer) -> str | None:
    """The FIDO2 PATCH and the CA writes, as the plan's JSON; a CA write first waits its turn."""
    op, body = write["op"], write.get("body") or {}
    method, path = write_request(write)
    if op == "patch_fido2":
        await graph.send_raw(method, path, body, what="update the passkey (FIDO2) policy")
        return None
    await ca.turn()
    if op == "delete_ca_policy":  # a rollback's: Entra keeps the policy restorable from deleted items
        await graph.send_raw(method, path, what="delete the Conditional Access policy")
        return None
    result, _ = await graph.send_raw(method, path, body, what=op.replace("_", " "))
    return (result or {}).get("id")


def _modes(values: list[str]) -> list[AuthenticationMethodModes]:
    from msgraph.generated.models.authentication_method_modes import AuthenticationMethodModes

    return [AuthenticationMethodModes(v) for v in values]


async def _create_strength(graph: GraphGateway, body: dict[str, Any]) -> str | None:
    """POST a new custom strength through the SDK's typed model; its id, for the writes that follow."""
    from msgraph.generated.models.authentication_strength_policy import AuthenticationStrengthPolicy

    strengths = graph.client.policies.authentication_strength_policies
    created = await graph.call("POST", lambda: strengths.post(AuthenticationStrengthPolicy(
        display_name=body["displayName"], description=body.get("description"),
        allowed_combinations=_modes(body.get("allowedCombinations", ["fido2"])))),
        what="create the authentication strength")
    return created.id if created else None


def _strength(graph: GraphGateway, write: dict[str, Any]) -> AuthenticationStrengthPolicyItemRequestBuilder:
    return graph.client.policies.authentication_strength_policies.by_authentication_strength_policy_id(
        str(write["strengthId"]))


async def _send_strength_write(graph: GraphGateway, write: dict[str, Any]) -> None:
    """Every other strength write, through the SDK's typed models (each built fresh from the plan's body)."""
    from msgraph.generated.models.authentication_strength_policy import AuthenticationStrengthPolicy
    from msgraph.generated.models.fido2_combination_configuration import Fido2CombinationConfiguration
    from msgraph.generated.policies.authentication_strength_policies.item.update_allowed_combinations.update_allowed_combinations_post_request_body import (  # noqa: E501
        UpdateAllowedCombinationsPostRequestBody,
    )

    op, body = write["op"], write.get("body") or {}
    item = _strength(graph, write)
    configs = item.combination_configurations
    if op == "delete_strength":
        await graph.call("DELETE", lambda: item.delete(), what="delete the authentication strength")
    elif op == "delete_combination_configuration":
        config = configs.by_authentication_combination_configuration_id(str(write["configurationId"]))
        await graph.call("DELETE", lambda: config.delete(), what="delete the strength's FIDO2 key restriction")
    elif op == "update_strength_combinations" and any("," in c for c in body["allowedCombinations"]):
        # A rollback may restore multi-method combinations, which the SDK's enum cannot write (pitfall 3)
        method, path = write_request(write)
        await graph.send_raw(method, path, body, what="restore the strength's allowed combinations")
    elif op == "update_strength":
        await graph.call("PATCH", lambda: item.patch(AuthenticationStrengthPolicy(
            display_name=body.get("displayName"), description=body.get("description"))),
            what="update the authentication strength")
    elif op == "update_strength_combinations":
        await graph.call("POST", lambda: item.update_allowed_combinations.post(
            UpdateAllowedCombinationsPostRequestBody(allowed_combinations=_modes(body["allowedCombinations"]))),
            what="update the strength's allowed combinations")
    elif op == "create_combination_configuration":
        await graph.call("POST", lambda: configs.post(Fido2CombinationConfiguration(
            applies_to_combinations=_modes(body.get("appliesToCombinations", ["fido2"])),
            allowed_a_a_g_u_i_ds=list(body["allowedAAGUIDs"]))), what="add the strength's FIDO2 key restriction")
    elif op == "update_combination_configuration":
        config = configs.by_authentication_combination_configuration_id(str(write["configurationId"]))
        await graph.call("PATCH", lambda: config.patch(Fido2CombinationConfiguration(
            applies_to_combinations=_modes(body["appliesToCombinations"]) if "appliesToCombinations" in body
            else None, allowed_a_a_g_u_i_ds=list(body["allowedAAGUIDs"]))),
            what="update the strength's FIDO2 key restriction")
    else:
        raise ValueError(f"unknown planned write {op!r}")
