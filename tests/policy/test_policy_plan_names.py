"""Plans name what a new or changed CA policy covers, name strengths, and never show a template placeholder."""
from __future__ import annotations

from typing import Any

from shared.policy.plan import build_plan
from shared.policy.plan_codec import plan_from_json, plan_to_json
from shared.policy.plan_model import STRENGTH_ID_PLACEHOLDER, Plan
from shared.policy.render import plan_to_markdown, render_plan_table
from tests.policy.policy_factories import (
    APP,
    BREAK_GLASS,
    GROUP_A,
    GROUP_B,
    ca_policy,
    ca_section,
    desired,
    legacy_fido2,
    security_group,
    strength,
)

ALICE = "66666666-6666-6666-6666-666666666666"
GHOST = "77777777-7777-7777-7777-777777777777"
HIDDEN_APP = "88888888-8888-8888-8888-888888888888"
DIRECTORY: dict[str, dict[str, Any] | None] = {
    ALICE: {"id": ALICE, "displayName": "Alice Admin", "userPrincipalName": "alice@contoso.example"},
    BREAK_GLASS: {"id": BREAK_GLASS, "displayName": "Break Glass", "userPrincipalName": "bg@contoso.example"},
    GHOST: None,
    APP: {"appId": APP, "displayName": "Payroll"},
}


def new_ca_plan() -> Plan:
    """A plan that creates the strength and a CA policy naming users, groups and applications."""
    state = desired(conditionalAccess=ca_section(
        includeUsers=[ALICE, GHOST], includeGroups=[GROUP_A], excludeUsers=[BREAK_GLASS], excludeGroups=[GROUP_B],
        includeApplications=[APP, HIDDEN_APP, "Office365"]))
    groups = {GROUP_A: security_group(GROUP_A, "Passkey pilot"), GROUP_B: security_group(GROUP_B, "Emergency")}
    return build_plan(state, legacy_fido2(), [], [], groups, DIRECTORY)


def test_new_strength_and_ca_show_no_placeholder() -> None:
    """A plan that creates strength and CA policy shows no `{{` in its table or Markdown, the new strength by name."""
    plan = new_ca_plan()
    for text in (render_plan_table(plan), plan_to_markdown(plan, tenant_id="t")):
        assert "{{" not in text, text
        assert "the new strength 'Authenticator passkey'" in text
    create = next(w for w in plan.writes if w["op"] == "create_ca_policy")
    assert create["body"]["grantControls"]["authenticationStrength"]["id"] == STRENGTH_ID_PLACEHOLDER


def test_new_ca_lists_who_and_what_it_covers_by_name() -> None:
    """Users, groups and applications a new CA policy includes and excludes are shown by name."""
    plan = new_ca_plan()
    fields = {c.field for c in plan.changes}
    assert {"conditions.users.includeUsers", "conditions.users.includeGroups", "conditions.users.excludeUsers",
            "conditions.users.excludeGroups", "conditions.applications.includeApplications"} <= fields
    for text in (render_plan_table(plan), plan_to_markdown(plan, tenant_id="t")):
        for shown in ("Alice Admin (alice@contoso.example)", "Break Glass (bg@contoso.example)",
                      f"Passkey pilot ({GROUP_A})", f"Emergency ({GROUP_B})", f"Payroll ({APP})", "Office 365"):
            assert shown in text, (shown, text)


def test_unknown_names_show_the_id_with_a_note() -> None:
    """A user that does not exist and an app whose name could not be read show as ids with a note."""
    text = render_plan_table(new_ca_plan())
    assert f"{GHOST} (not found)" in text
    assert f"{HIDDEN_APP} (name not readable)" in text


def test_special_values_in_words() -> None:
    """All, GuestsOrExternalUsers and the app keywords are said in words."""
    state = desired(conditionalAccess=ca_section(includeUsers=["All"], includeApplications=["All"]))
    text = render_plan_table(build_plan(state, legacy_fido2(), [], [], {}, DIRECTORY))
    assert "All users" in text and "All cloud apps" in text
    state = desired(conditionalAccess=ca_section(includeUsers=["All"], includeApplications=["MicrosoftAdminPortals"]))
    changed = build_plan(state, legacy_fido2(), [strength(aaguids=None)],
                         [ca_policy(include_users=["GuestsOrExternalUsers"], apps=["None"])], {}, DIRECTORY)
    text = render_plan_table(changed)
    assert "Guests or external users" in text and "Microsoft Admin Portals" in text and "No cloud apps" in text


def test_existing_strength_by_name() -> None:
    """A CA grant that moves to our existing strength shows both strengths as '<name> (<id>)'."""
    other = {**strength("s-other", "Password and SMS"), "allowedCombinations": ["password,sms"]}
    state = desired(conditionalAccess=ca_section())
    made = build_plan(state, legacy_fido2(), [strength(aaguids=None), other], [ca_policy(strength_id="s-other")],
                      {}, DIRECTORY)
    row = next(c for c in made.changes if c.field == "grantControls.authenticationStrength.id")
    assert (row.before, row.after) == ("s-other", "s-ours")
    for text in (render_plan_table(made), plan_to_markdown(made)):
        assert "Password and SMS (s-other)" in text and "Authenticator passkey (s-ours)" in text


def test_names_survive_the_stored_plan() -> None:
    """Names ride along in plan JSON, so a stored plan renders the same table."""
    plan = new_ca_plan()
    loaded = plan_from_json(plan_to_json(plan))
    assert render_plan_table(loaded) == render_plan_table(plan)
    assert plan_to_json(loaded) == plan_to_json(plan)


def test_changed_ca_names_what_it_covers_today() -> None:
    """Updating a CA policy shows the users, groups and apps it covers today by name too (the BEFORE side)."""
    old_group = "99999999-9999-9999-9999-999999999999"
    directory = {**DIRECTORY, old_group: {"id": old_group, "displayName": "Old pilot"}}
    current = ca_policy(include_users=[ALICE], include_groups=[old_group], apps=[HIDDEN_APP])
    state = desired(conditionalAccess=ca_section())
    text = render_plan_table(build_plan(state, legacy_fido2(), [strength(aaguids=None)], [current], {}, directory))
    for shown in ("Alice Admin (alice@contoso.example)", f"Old pilot ({old_group})",
                  f"{HIDDEN_APP} (name not readable)", f"Payroll ({APP})"):
        assert shown in text, (shown, text)
