"""How flags are shown: GET /api/flags pages and filters, and the helpdesk CSV export opened in a spreadsheet never
turns user-chosen text into a formula (OWASP CSV injection)."""
from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

from shared.upn.decide import holder_flag
from shared.upn.flag_views import CSV_COLUMNS, flags_csv
from shared.upn.sweep import sweep
from tests.e2e.stack import eventually, running_stack, tenant, uid, user
from tests.upn.stack_steps import rename

HOSTILE = ("=HYPERLINK(\"http://evil.example\",\"open\")", "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(1+1)*cmd",
           "\tTab", "\rReturn")


async def test_the_csv_export_escapes_every_cell_a_spreadsheet_would_run(azurite):
    """Hostile passkey names and UPNs come out with a leading quote; harmless cells are unchanged."""
    users = [user(1, key=None), user(2, key=None), user(3, key=None)]
    async with running_stack(azurite, tenant(users)) as stack:
        await sweep(stack.services)
        for n, name in enumerate(HOSTILE[:3], start=1):
            stack.sim.register_passkey(uid(n), displayName=name, aaGuid="de1e552d-db1d-4423-a619-566b625cdc84")
        for n, new_upn in ((1, "=1+1@fabrikam.example"), (2, "-user2@fabrikam.example"),
                           (3, "user3@fabrikam.example")):
            await rename(stack, n, new_upn)
        await sweep(stack.services)

        async def three() -> bool:
            return len(await stack.all_flags()) == 3

        await eventually(three)
        rows = list(csv.DictReader(io.StringIO(await flags_csv(stack.services, status=None))))
        by_user = {r["userId"]: r for r in rows}
        assert by_user[uid(1)]["newUpn"] == "'=1+1@fabrikam.example"
        assert by_user[uid(2)]["newUpn"] == "'-user2@fabrikam.example"
        assert by_user[uid(3)]["newUpn"] == "user3@fabrikam.example"
        assert by_user[uid(1)]["oldUpn"] == "user1@contoso.example"
        for row in rows:
            for column, cell in row.items():
                assert not cell or cell[0] not in "=+-@\t\r", (column, cell)
        assert by_user[uid(1)]["passkeys"].startswith("'=HYPERLINK(")  # the user's only passkey, named by them
        assert by_user[uid(3)]["passkeys"].startswith("'-2+3 (")


def test_each_formula_trigger_character_is_prefixed_with_a_quote():
    """Every OWASP trigger (=, +, -, @, tab, carriage return) at the start of a cell gets a leading quote."""
    from shared.upn.flag_views import csv_cell

    for text in HOSTILE:
        assert csv_cell(text) == "'" + text
    for text in ("user@contoso.example", "", "3", "a=b", " =x"):
        assert csv_cell(text) == text
    assert csv_cell(None) == "" and csv_cell(2) == "2"


async def test_flags_are_listed_paged_and_exported_as_csv(azurite):
    """GET /api/flags filters by status and pages; the CSV export names the passkey provider."""
    async with running_stack(azurite, tenant([user(n) for n in range(1, 6)])) as stack:
        await sweep(stack.services)
        for n in range(1, 6):
            await rename(stack, n, f"user{n}@fabrikam.example")
        await sweep(stack.services)

        async def five() -> bool:
            return len(await stack.all_flags()) == 5

        await eventually(five)
        status, text, _ = await stack.get("flags", params={"status": "pending", "limit": "2"})
        page = json.loads(text)
        assert status == 200 and len(page["value"]) == 2 and page["nextPageToken"]
        status, text, _ = await stack.get("flags", params={"status": "bogus"})
        assert status == 400 and "status" in json.loads(text)["error"]["message"]
        status, text, headers = await stack.get("flags/export")
        assert status == 200 and headers["Content-Type"].startswith("text/csv")
        lines = text.strip().splitlines()
        assert lines[0].startswith("userId,oldUpn,newUpn,status") and len(lines) == 6


async def test_the_api_and_the_export_say_whether_a_flag_s_passkey_details_are_complete(azurite):
    """A flag opened on the registration report's word shows passkeyDetails pending (and since when) in GET
    /api/flags and in the CSV export; a flag whose passkeys were read shows complete."""
    async with running_stack(azurite, tenant([user(1), user(2)])) as stack:
        await sweep(stack.services)
        await rename(stack, 1, "user1@fabrikam.example")
        await sweep(stack.services)
        await eventually(lambda: stack.settled_flag(uid(1)))
        since = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
        await stack.services.store.flags.create([holder_flag(uid(2), "user2@fabrikam.example", "user2@contoso.example",
                                                             source="sweep", detected_at=since)])
        status, text, _ = await stack.get("flags")
        assert status == 200
        shown = {f["userId"]: f for f in json.loads(text)["value"]}
        assert shown[uid(1)]["passkeyDetails"] == "complete" and "detailsSince" not in shown[uid(1)]
        assert (shown[uid(2)]["passkeyDetails"], shown[uid(2)]["detailsSince"], shown[uid(2)]["passkeys"]) == (
            "pending", "2026-03-01T09:30:00Z", [])
        assert CSV_COLUMNS.index("passkeyDetails") == CSV_COLUMNS.index("passkeyCount") + 1
        status, text, _ = await stack.get("flags/export")
        rows = {r["userId"]: r for r in csv.DictReader(io.StringIO(text))}
        assert (rows[uid(1)]["passkeyDetails"], rows[uid(1)]["passkeyCount"]) == ("complete", "1")
        assert (rows[uid(2)]["passkeyDetails"], rows[uid(2)]["passkeyCount"]) == ("pending", "0")
