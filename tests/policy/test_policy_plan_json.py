"""Stored plans (plan_to_json / plan_from_json) and plan renderings for people (text table, Markdown)."""
from __future__ import annotations

import json

import pytest

from shared.errors import InputError
from shared.policy.lockout import attach_lockout
from shared.policy.plan import build_plan
from shared.policy.plan_codec import plan_from_json, plan_to_json
from shared.policy.plan_model import Plan
from shared.policy.render import plan_to_markdown, render_plan_table
from tests.policy.policy_factories import (
    ANDROID,
    IOS,
    ONEPASSWORD,
    YUBIKEY,
    ca_section,
    desired,
    detail_of,
    legacy_fido2,
    method,
    restrictions,
    strength,
)


def rich_plan() -> Plan:
    """A plan with changes, warnings, narrowing and evaluated lockout rows."""
    state = desired(passkeyMethod=method(keyRestrictions=restrictions(remove=[YUBIKEY])),
                    aaguidNames={YUBIKEY: "YubiKey | 5"}, conditionalAccess=ca_section(excludeUsers=[]))
    plan = build_plan(state, legacy_fido2(aaguids=[YUBIKEY, ONEPASSWORD], mode="allow"), [], [], {})
    return attach_lockout(plan, {"u-1": [{"id": "m-1", "aaGuid": YUBIKEY, "model": "YubiKey 5"}]},
                          {"u-1": "ada@contoso.com"})


def test_round_trip_preserves_everything() -> None:
    """plan_from_json(plan_to_json(p)) equals p, also through real JSON text."""
    plan = rich_plan()
    doc = plan_to_json(plan)
    assert doc["requiresAcceptance"] is True and doc["empty"] is False
    again = plan_from_json(json.loads(json.dumps(doc)))
    assert again == plan
    assert plan_to_json(again) == doc


def test_round_trip_of_an_empty_plan() -> None:
    """An empty plan round-trips and stays empty."""
    plan = build_plan(desired(), legacy_fido2(), [strength(aaguids=[ANDROID, IOS])], [], {})
    again = plan_from_json(plan_to_json(plan))
    assert again.empty and again == plan


def test_stored_writes_show_the_request_each_write_becomes() -> None:
    """Each stored write names its Graph method and path (derived, not held by the plan); loading drops them."""
    state = desired(conditionalAccess=ca_section(excludeUsers=[]))
    plan = build_plan(state, legacy_fido2(aaguids=[YUBIKEY], mode="allow"), [], [], {})
    shown = [(w["op"], w["method"], w["path"]) for w in plan_to_json(plan)["writes"]]
    strengths = "/policies/authenticationStrengthPolicies"
    assert shown == [
        ("patch_fido2", "PATCH", "/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/fido2"),
        ("create_strength", "POST", strengths),
        ("create_combination_configuration", "POST", f"{strengths}/{{{{strength.id}}}}/combinationConfigurations"),
        ("create_ca_policy", "POST", "/identity/conditionalAccess/policies")]
    assert all("path" not in w and "method" not in w for w in plan_from_json(plan_to_json(plan)).writes)


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda d: d.update(version=99), "version"),
    (lambda d: d.update(writes=[{"op": "delete_everything", "path": "/", "body": {}}]), "writes[0].op"),
    (lambda d: d.update(writes="x"), "writes"),
    (lambda d: d.pop("stateHash"), "stateHash"),
    (lambda d: d["changes"][0].pop("area"), "changes[0].area"),
    (lambda d: d.update(methodAfter=[]), "methodAfter"),
])
def test_malformed_stored_plan_is_an_input_error(mutate: object, field: str) -> None:
    """A damaged stored plan raises InputError naming the field."""
    doc = plan_to_json(rich_plan())
    mutate(doc)  # type: ignore[operator]
    with pytest.raises(InputError) as info:
        plan_from_json(doc)
    assert detail_of(info.value)[0]["field"] == field


def test_plan_from_json_rejects_non_objects() -> None:
    """A stored plan must be a JSON object."""
    with pytest.raises(InputError):
        plan_from_json([1])


def test_text_table_shows_names_beside_aaguids() -> None:
    """The fixed-width table shows AAGUIDs with names (document's, shipped) and falls back to the bare GUID."""
    text = render_plan_table(rich_plan())
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("AREA"))
    assert header.split() == ["AREA", "FIELD", "BEFORE", "AFTER", "NOTE"]
    assert f"{YUBIKEY} (YubiKey | 5)" in text
    assert f"{ONEPASSWORD} (1Password)" in text
    assert f"{ANDROID} (Microsoft Authenticator (Android))" in text
    assert "LOCKOUT: 1 registered passkey(s)" in text and "ada@contoso.com" in text
    assert "requires explicit acceptance" in text
    # fixed width: every table row starts its BEFORE column at the same offset
    col = header.index("BEFORE")
    rows = lines[lines.index(header) + 2:]
    aaguid_rows = [r for r in rows if r.startswith("passkeyMethod")]
    assert aaguid_rows and all(r[col - 2:col] == "  " for r in aaguid_rows)


def test_text_table_for_empty_plan() -> None:
    """An empty plan says there is nothing to change."""
    plan = build_plan(desired(), legacy_fido2(), [strength(aaguids=[ANDROID, IOS])], [], {})
    assert "No changes" in render_plan_table(plan)


def test_plan_markdown() -> None:
    """The Markdown plan has a header, a changes table with escaped pipes, warnings and the lockout table."""
    md = plan_to_markdown(rich_plan(), tenant_id="tenant-1", generated_at="2026-05-01T10:00:00Z", plan_id="p-1")
    assert md.startswith("# Passkey Guard plan\n")
    assert "- Tenant: `tenant-1`" in md and "- Plan: `p-1`" in md and "2026-05-01T10:00:00Z" in md
    assert "| Area | Field | Before | After | Note |" in md
    assert "YubiKey \\| 5" in md
    assert "`no_emergency_access`" in md
    assert "## Lockout" in md and "ada@contoso.com" in md
    assert "requires acceptance" in md


def test_plan_markdown_blocked() -> None:
    """A plan with errors says it is blocked."""
    plan = build_plan(desired(passkeyMethod=method(includeTargets=["11111111-1111-1111-1111-111111111111"])),
                      legacy_fido2(), [], [], {})
    assert "**BLOCKED" in plan_to_markdown(plan)
