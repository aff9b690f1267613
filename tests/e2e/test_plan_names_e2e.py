"""A plan for a new CA policy names who and what it covers, read through the simulator (Graph) and Azurite."""
from __future__ import annotations

from shared.policy.apply import apply_document
from shared.policy.planning import plan
from tests.e2e.stack import running_stack, tenant, uid, user
from tests.e2e.test_policy_e2e import BREAK_GLASS, GROUPS, PILOT, doc_with

PAYROLL = "9e1d0b4c-1111-4a2b-8c3d-000000000001"
GONE_APP = "9e1d0b4c-1111-4a2b-8c3d-00000000dead"
GONE_USER = "00000099-aaaa-4bbb-8ccc-000000000000"


async def test_plan_table_names_the_new_policys_users_groups_and_apps(azurite):
    """Planning a new CA policy over Graph shows its group, user and app by name, and no template placeholder."""
    doc = tenant([user(1), user(2)], groups=GROUPS, servicePrincipals=[
        {"id": "5a6b7c8d-2222-4a2b-8c3d-000000000001", "appId": PAYROLL, "displayName": "Payroll"}])
    async with running_stack(azurite, doc, drain=False) as stack:
        document = doc_with(conditionalAccess={
            "displayName": "Require Authenticator passkey", "includeUsers": [uid(1), GONE_USER],
            "includeGroups": [PILOT], "excludeGroups": [BREAK_GLASS], "includeApplications": [PAYROLL, GONE_APP]})
        planned = await plan(stack.services, trigger="test", document=document)
        for text in (planned["table"], planned["markdown"]):
            assert "{{" not in text, text
            for shown in ("User 1 (user1@contoso.example)", f"Passkey Pilot ({PILOT})",
                          f"Break Glass ({BREAK_GLASS})", f"Payroll ({PAYROLL})", f"{GONE_APP} (not found)",
                          f"{GONE_USER} (not found)", "the new strength 'Authenticator passkey'"):
                assert shown in text, (shown, text)
        create = next(w for w in planned["plan"]["writes"] if w["op"] == "create_ca_policy")
        assert create["body"]["grantControls"]["authenticationStrength"]["id"] == "{{strength.id}}"


async def test_an_app_name_graph_will_not_show_is_noted_and_the_plan_goes_on(azurite):
    """Without Application.Read.All the app shows as its id with "(name not readable)"; the plan is still made."""
    doc = tenant([user(1)], groups=GROUPS, servicePrincipals=[
        {"id": "5a6b7c8d-2222-4a2b-8c3d-000000000001", "appId": PAYROLL, "displayName": "Payroll"}])
    doc["simulator"]["application_read_granted"] = False
    async with running_stack(azurite, doc, drain=False) as stack:
        document = doc_with(conditionalAccess={"displayName": "Require Authenticator passkey",
                                               "includeGroups": [PILOT], "excludeUsers": [uid(1)],
                                               "includeApplications": [PAYROLL]})
        planned = await plan(stack.services, trigger="test", document=document)
        assert not planned["blocked"]
        assert f"{PAYROLL} (name not readable)" in planned["table"]
        assert "User 1 (user1@contoso.example)" in planned["table"]


async def test_a_changed_policy_names_who_it_covers_today(azurite):
    """Re-targeting an applied CA policy names the users and groups it covers today (BEFORE) as well."""
    async with running_stack(azurite, tenant([user(1), user(2)], groups=GROUPS), drain=False) as stack:
        first = doc_with(conditionalAccess={"displayName": "Require Authenticator passkey", "includeUsers": [uid(1)],
                                            "includeGroups": [PILOT], "excludeGroups": [BREAK_GLASS],
                                            "includeApplications": ["All"]})
        assert (await apply_document(stack.services, trigger="test", document=first))["result"] == "applied"
        second = doc_with(conditionalAccess={"displayName": "Require Authenticator passkey", "includeUsers": [uid(2)],
                                             "excludeGroups": [BREAK_GLASS], "includeApplications": ["Office365"]})
        table = (await plan(stack.services, trigger="test", document=second))["table"]
        for shown in ("User 1 (user1@contoso.example)", "User 2 (user2@contoso.example)",
                      f"Passkey Pilot ({PILOT})", "All cloud apps", "Office 365"):
            assert shown in table, (shown, table)
