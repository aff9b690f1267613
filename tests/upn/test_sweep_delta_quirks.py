"""The delta sweep against Graph's documented delta quirks, played by the simulator: users returned again
(replays) make no second flag and no second history entry, and a rename that delta shows only later is
flagged by the first sweep that sees it."""
from __future__ import annotations

from shared.upn.sweep import sweep
from tests.e2e.stack import eventually, running_stack, tenant, uid, user
from tests.upn.stack_steps import history_kinds, rename

RENAMED = (3, 8, 13)


async def _settled(stack) -> bool:
    return await stack.queues_empty()


async def test_replayed_users_make_no_second_flag(azurite):
    """With delta replaying half the tenant each round, three sweeps after three renames leave exactly the
    three renamed users flagged, each flag with one detection in its history (and the slow lane's reading of its
    passkeys), and nobody else flagged."""
    async with running_stack(azurite, tenant([user(n) for n in range(1, 31)])) as stack:
        await sweep(stack.services)
        stack.sim.configure(delta_replay_rate=0.5)
        for n in RENAMED:
            await rename(stack, n, f"user{n}@fabrikam.example")
        results = [await sweep(stack.services) for _ in range(3)]  # no waiting: replays race the processor
        assert all(r["users"] > len(RENAMED) for r in results)      # the rounds really carried replays

        async def all_flagged() -> bool:
            return {f["userId"] for f in await stack.all_flags()} == {uid(n) for n in RENAMED}

        await eventually(all_flagged)
        await eventually(lambda: _settled(stack))
        flags = await stack.all_flags()
        assert len(flags) == len(RENAMED)
        for flag in flags:
            assert history_kinds(flag) == ["UPN changed", "passkey details read"], flag
            assert flag["newUpn"].endswith("@fabrikam.example") and flag["oldUpn"].endswith("@contoso.example")


async def test_a_rename_delta_shows_late_is_flagged_by_a_later_sweep(azurite):
    """With delta_visibility_delay_s, a sweep run right after a rename queues nothing; once the rename is
    old enough on the simulator's clock, the next sweep flags it (the checkpoint did not skip past it)."""
    async with running_stack(azurite, tenant([user(n) for n in range(1, 11)])) as stack:
        stack.sim.configure(delta_visibility_delay_s=120.0)
        stack.sim.clock(frozen=True, advance=120.0)
        try:
            await sweep(stack.services)
            await rename(stack, 4, "user4@fabrikam.example")
            early = await sweep(stack.services)
            assert early["messagesQueued"] == 0 and early["complete"]
            stack.sim.clock(advance=119.0)
            assert (await sweep(stack.services))["messagesQueued"] == 0
            assert await stack.flag(uid(4)) is None
            stack.sim.clock(advance=1.0)
            late = await sweep(stack.services)
            assert late["messagesQueued"] == 1
            flag = await eventually(lambda: stack.settled_flag(uid(4)))
            assert flag["source"] == "sweep" and flag["newUpn"] == "user4@fabrikam.example"
        finally:
            stack.sim.clock(frozen=False)
