"""The command line: the same use cases as the functions, for an administrator's shell.

    python -m shared verify   [--json] [--document FILE]
    python -m shared plan     [--json] [--document FILE]
    python -m shared apply    [--json] [--document FILE | --plan-id ID] [--accept-lockout]
                              [--accept-no-emergency-exclusion]
    python -m shared rollback RUN_ID [--json] [--accept-lockout]
    python -m shared sweep    [--json] [--process]
    python -m shared process-queue [--json]
    python -m shared track    [--json]
    python -m shared flags    [--json | --csv] [--status STATUS]
    python -m shared flags    approve-removal (USER_ID... | --all-waiting) [--json]
    python -m shared runs     [RUN_ID] [--json]
    python -m shared subscribe [--json]
    python -m shared holders  [--refresh] [--json]

Settings come from the environment (see the README's settings reference). Exit codes: 0 success,
1 a check failed, the plan needs a person or the request was refused (stale plan, lease held, a rollback
that kept an object changed since the run), 2 bad input
or settings (an unknown id too), 3 Graph or storage failed, or queued work could not be processed (a message
moved to the poison queue, or still queued after waiting): the only code worth retrying as it is.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from shared.errors import (
    ConfigError,
    ConflictError,
    InputError,
    LockoutRefused,
    MissingGraphPermission,
    NotFound,
    PasskeyGuardError,
)

if TYPE_CHECKING:
    from shared.services import Services

EXIT_OK, EXIT_FINDINGS, EXIT_INPUT, EXIT_FAILED = 0, 1, 2, 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m shared", description="Passkey Guard")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--json", action="store_true", help="print JSON instead of text")
        return p

    for name, text in (("verify", "run the compliance checks"), ("plan", "plan and store the plan")):
        add(name, text).add_argument("--document", type=Path, help="desired-state file (default: POLICY_FILE)")
    apply = add("apply", "make the tenant match the desired state")
    group = apply.add_mutually_exclusive_group()
    group.add_argument("--document", type=Path, help="desired-state file (default: POLICY_FILE)")
    group.add_argument("--plan-id", help="apply a stored plan, only if the tenant has not changed since")
    apply.add_argument("--accept-lockout", action="store_true", help="accept that the listed users lose passkeys")
    apply.add_argument("--accept-no-emergency-exclusion", action="store_true",
                       help="accept enforcing a CA policy that excludes no emergency-access account or group")
    rollback = add("rollback", "undo what an apply run changed (passkey method, strength, CA policy), except "
                               "what changed since")
    rollback.add_argument("run_id")
    rollback.add_argument("--accept-lockout", action="store_true",
                          help="accept that the listed users lose passkeys")
    sweep = add("sweep", "read users/delta and queue UPN changes")
    sweep.add_argument("--process", action="store_true",
                       help="then process the queue here, as the queue trigger would, and report the flags")
    add("process-queue", "process the queued UPN changes here, as the queue trigger would")
    add("track", "move open UPN-change flags on")
    flags = add("flags", "list UPN-change flags")
    flags.add_argument("--csv", action="store_true", help="print CSV for the helpdesk")
    flags.add_argument("--status", help="only flags with this status")
    flags.add_argument("action", nargs="?", choices=["approve-removal"],
                       help="approve-removal: let the next tracker run delete these flags' stale passkeys")
    flags.add_argument("user_ids", nargs="*", metavar="USER_ID", help="with approve-removal: the users")
    flags.add_argument("--all-waiting", action="store_true", help="with approve-removal: every waiting flag")
    runs = add("runs", "list recent runs, or show one run and its progress")
    runs.add_argument("run_id", nargs="?", metavar="RUN_ID", help="show this run only")
    add("subscribe", "create or renew the Graph /users subscription")
    holders = add("holders", "show the passkey holders index (from Graph's registration report)")
    holders.add_argument("--refresh", action="store_true",
                         help="first bring it up to the report (one request while the report is unchanged)")
    return parser


def _document(path: Path | None) -> Any:
    if path is None:
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"--document: cannot read {path}: {exc.strerror}") from None
    except ValueError:
        raise InputError(f"--document: {path} is not valid JSON") from None


def _approval_ids(args: argparse.Namespace) -> list[str] | None:
    """The users `flags approve-removal` names: some ids, or None for --all-waiting (exactly one of them)."""
    if bool(args.user_ids) == bool(args.all_waiting):
        raise InputError("approve-removal: name the users (USER_ID...) or give --all-waiting, not both")
    return None if args.all_waiting else list(args.user_ids)


#: What a command returns: the JSON result, the text for people, the exit code.
Outcome = tuple[Any, str, int]


async def _verify(services: Services, args: argparse.Namespace) -> Outcome:
    from shared.actors import SIGNED_IN_ADMINISTRATOR
    from shared.policy import verify as policy

    result = await policy.verify(services, trigger="cli", document=_document(args.document),
                                 actor=SIGNED_IN_ADMINISTRATOR)
    return result, result["markdown"], EXIT_OK if result["passed"] else EXIT_FINDINGS


async def _plan(services: Services, args: argparse.Namespace) -> Outcome:
    from shared.actors import SIGNED_IN_ADMINISTRATOR
    from shared.policy import planning as policy

    result = await policy.plan(services, trigger="cli", document=_document(args.document),
                               actor=SIGNED_IN_ADMINISTRATOR)
    text = f"Plan {result['planId']}\n\n{result['table']}"
    needs_person = result["blocked"] or result["requiresAcceptance"]
    return result, text, EXIT_FINDINGS if needs_person else EXIT_OK


async def _apply(services: Services, args: argparse.Namespace) -> Outcome:
    from shared.actors import SIGNED_IN_ADMINISTRATOR
    from shared.policy import apply as policy

    if args.plan_id:
        result = await policy.apply_stored_plan(
            services, args.plan_id, accept_lockout=args.accept_lockout, trigger="cli",
            accept_no_emergency_exclusion=args.accept_no_emergency_exclusion, actor=SIGNED_IN_ADMINISTRATOR)
    else:
        result = await policy.apply_document(
            services, trigger="cli", document=_document(args.document), accept_lockout=args.accept_lockout,
            accept_no_emergency_exclusion=args.accept_no_emergency_exclusion, actor=SIGNED_IN_ADMINISTRATOR)
    return result, f"Run {result['runId']}: {result['result']}\n\n{result['table']}", EXIT_OK


async def _rollback(services: Services, args: argparse.Namespace) -> Outcome:
    from shared.actors import SIGNED_IN_ADMINISTRATOR
    from shared.policy import rollback as policy

    result = await policy.rollback(services, args.run_id, accept_lockout=args.accept_lockout, trigger="cli",
                                   actor=SIGNED_IN_ADMINISTRATOR)
    text = f"Run {result['runId']}: {result['result']} (rollback of run {args.run_id})\n\n{result['table']}"
    return result, text, EXIT_FINDINGS if result["kept"] else EXIT_OK  # kept objects need a person


async def _sweep(services: Services, args: argparse.Namespace) -> Outcome:
    from shared.actors import SIGNED_IN_ADMINISTRATOR
    from shared.progress import terminal_bar, watched
    from shared.upn import drain, sweep

    bar = terminal_bar(sys.stderr)  # on a terminal only: pipes, logs and tests get no bar
    try:
        with watched(bar.draw if bar is not None else None):
            result = await sweep.sweep(services, trigger="cli", actor=SIGNED_IN_ADMINISTRATOR)
    finally:
        if bar is not None:
            bar.close()
    text = " ".join(f"{k}={v}" for k, v in result.items())
    if not args.process:
        return result, text, EXIT_OK
    drained = await drain.process_queue(services)
    return {"sweep": result, "queue": drained}, f"{text}\n{drain.summary(drained)}", _drained_exit(drained)


async def _process_queue(services: Services, args: argparse.Namespace) -> Outcome:
    from shared.upn import drain

    drained = await drain.process_queue(services)
    return drained, drain.summary(drained), _drained_exit(drained)


async def _track(services: Services, args: argparse.Namespace) -> Outcome:
    from shared.upn import tracker

    result = await tracker.track_flags(services)
    return result, " ".join(f"{k}={v}" for k, v in result.items()), EXIT_OK


async def _flags(services: Services, args: argparse.Namespace) -> Outcome:
    from shared.upn import flag_views, tracker

    if args.action == "approve-removal":
        result = await tracker.approve_removals(services, _approval_ids(args), by="cli")
        text = (f"approved: {', '.join(result['approved']) or 'none'}; "
                f"already approved: {', '.join(result['alreadyApproved']) or 'none'}")
        return result, text, EXIT_OK
    if args.user_ids or args.all_waiting:
        raise InputError("USER_ID and --all-waiting go with the approve-removal action")
    if args.csv:
        text = await flag_views.flags_csv(services, status=args.status)
        return {"csv": text}, text, EXIT_OK
    flags: list[dict[str, Any]] = []
    token = None
    while True:
        page = await flag_views.list_flags(services, status=args.status, limit=1000, page_token=token)
        flags += page["value"]
        token = page["nextPageToken"]
        if not token:
            break
    lines = [f"{f['status']:<9} {f['userId']}  {f['oldUpn']} -> {f['newUpn']}  ({_passkeys_shown(f)}, "
             f"since {f['detectedAt']})" for f in flags]
    return {"value": flags}, "\n".join(lines) or "no flags", EXIT_OK


def _passkeys_shown(flag: dict[str, Any]) -> str:
    """A listed flag's passkeys: their count, or that their details are still to be read."""
    count = f"{len(flag.get('passkeys', []))} passkey(s)"
    return count if flag.get("passkeyDetails") != "pending" else f"{count} so far, details pending"


async def _runs(services: Services, args: argparse.Namespace) -> Outcome:
    from shared.actors import describe_run_actor
    from shared.policy import runs as policy
    from shared.progress import describe_details, describe_progress

    if args.run_id:
        from shared.policy.jobs import public_run

        run = await policy.with_details(services, public_run(await services.store.runs.get(args.run_id)))
        return run, _run_text(run), EXIT_OK
    result = await policy.list_runs(services, limit=20)
    lines = []
    for r in result["value"]:
        progress = describe_progress(r.get("progress"), running=r["result"] == "running")
        details = describe_details(r.get("details"))
        lines.append(f"{r['startedAt']}  {r['kind']:<8} {r['result']:<20} {r['runId']}  {describe_run_actor(r)}"
                     + (f"  [{progress}]" if progress else "") + (f"  [{details}]" if details else ""))
    return result, "\n".join(lines) or "no runs", EXIT_OK


#: The counts a run may hold beside its result (a sweep's), shown by `runs RUN_ID` in this order.
_RUN_COUNTS = ("pages", "users", "changedUsers", "messagesQueued", "resyncs", "graphCalls", "durationMs")


def _run_text(run: dict[str, Any]) -> str:
    """One run for people: what, how it stands, who started it, its progress, counts and error."""
    from shared.actors import describe_run_actor
    from shared.progress import describe_details, describe_progress

    lines = [f"run {run['runId']}: {run.get('kind', '?')} {run.get('result', '?')} ({run['status']})",
             f"started:  {run['startedAt']}, {describe_run_actor(run)}"]
    progress = describe_progress(run.get("progress"), running=run["status"] != "done")
    if progress:
        lines.append(f"progress: {progress} (updated {run['progress'].get('updatedAt', '?')})")
    details = describe_details(run.get("details"))
    if details:
        lines.append(f"details:  {details}")
    counts = [f"{k}={run[k]}" for k in _RUN_COUNTS if k in run]
    if counts:
        lines.append("counts:   " + " ".join(counts))
    error = run.get("error")
    if isinstance(error, dict):
        lines.append(f"error:    {error.get('code')}: {error.get('message')}")
    return "\n".join(lines)


async def _subscribe(services: Services, args: argparse.Namespace) -> Outcome:
    from shared.upn import subscriptions

    result = await subscriptions.ensure_subscription(services)
    return result, f"subscription {result['id']}: {result['action']}, expires {result['expirationDateTime']}", EXIT_OK


async def _holders(services: Services, args: argparse.Namespace) -> Outcome:
    from shared.upn.clock import iso
    from shared.upn.holders import refresh_holders

    refresh = await refresh_holders(services) if args.refresh else None
    meta = await services.store.holders.meta()
    index = None if meta is None else {
        "count": meta.count, "readAt": iso(meta.read_at),
        "reportRefreshedAt": None if meta.report_refreshed_at is None else iso(meta.report_refreshed_at)}
    result: dict[str, Any] = {"index": index} | ({"refresh": refresh} if refresh is not None else {})
    lines = []
    if refresh is not None:
        lines.append("refresh: " + " ".join(f"{k}={v}" for k, v in refresh.items()))
    lines.append("holders index: never built" if index is None else
                 f"holders index: {index['count']} holder(s), read {index['readAt']} from the report of "
                 f"{index['reportRefreshedAt'] or 'no holder (empty)'}")
    return result, "\n".join(lines), EXIT_OK


#: Each subcommand of _parser() and the function that runs it.
COMMANDS: dict[str, Callable[[Services, argparse.Namespace], Awaitable[Outcome]]] = {
    "verify": _verify, "plan": _plan, "apply": _apply, "rollback": _rollback, "sweep": _sweep,
    "process-queue": _process_queue, "track": _track, "flags": _flags, "runs": _runs, "subscribe": _subscribe,
    "holders": _holders,
}


async def _run(args: argparse.Namespace) -> Outcome:
    """Run the command with the administrator's own sign-in (not the app's); runs record the administrator
    the Graph token names. Returns (JSON result, text for people, exit code)."""
    from shared.services import get_services

    services = get_services(administrator=True)
    try:
        return await COMMANDS[args.command](services, args)
    finally:
        await services.close()


def _drained_exit(drained: dict[str, Any]) -> int:
    """The queue was processed to the end (0), or some of it was not (3: poisoned or still queued)."""
    return EXIT_FAILED if drained["poisoned"] or drained["remaining"] else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        result, text, code = asyncio.run(_run(args))
    except PasskeyGuardError as exc:
        _fail(args, exc)
        return exit_code_of(exc)
    emit(json.dumps(result, indent=2, default=str) if args.json else text)
    return code


def exit_code_of(exc: PasskeyGuardError) -> int:
    """1 for a refusal a person must look at (lockout, stale or already-applied plan, lease held), 2 for bad
    input or settings (including an unknown plan or run id), 3 only when Graph or storage failed, so a
    script retries what can succeed on a retry and nothing else."""
    if isinstance(exc, LockoutRefused | ConflictError):
        return EXIT_FINDINGS
    if isinstance(exc, InputError | ConfigError | NotFound | MissingGraphPermission):
        return EXIT_INPUT  # a missing Graph role is the deployment's setting: retrying cannot help
    return EXIT_FAILED


def emit(text: str, *, stream: TextIO | None = None) -> bool:
    """Print the result; a reader that went away (`| head`) ends the output quietly. False when it did."""
    out = sys.stdout if stream is None else stream
    try:
        print(text, file=out)
        out.flush()
    except BrokenPipeError:
        # Python would report the broken pipe again when it flushes stdout at exit: point it at devnull.
        if stream is None:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return False
    return True


def _fail(args: argparse.Namespace, exc: PasskeyGuardError) -> None:
    if args.json:
        print(json.dumps(exc.to_body(), indent=2, default=str))
    else:
        print(f"error: {exc.message}", file=sys.stderr)
        if isinstance(exc, InputError) and isinstance(exc.detail, list):
            for row in exc.detail:  # every problem of a document, not only the first
                if isinstance(row, dict) and "field" in row:
                    print(f"  {row['field']}: {row.get('problem', '')}", file=sys.stderr)
        if isinstance(exc, LockoutRefused) and isinstance(exc.detail, dict):
            for row in exc.detail.get("lockout", []):
                print(f"  would lose a passkey: {row['userPrincipalName'] or row['userId']} "
                      f"({row['name']}, {row['aaGuid']})", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
