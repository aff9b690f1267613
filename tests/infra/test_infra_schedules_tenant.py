"""infra/ describes each timer schedule as the timer it drives, and manages only the deployment's own tenant.

The meaning of a schedule comes from function_app.py (which function binds `%X_SCHEDULE%`); the cadence from
the Bicep default. A description that names another timer, or a cadence its default does not have, is reported.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import bicep_checks as checks
from bicep_checks import REPO_ROOT, Mutate

MAIN = "infra/main.bicep"
FUNCTION = "infra/app/function.bicep"


def timer_functions(function_app: Path) -> dict[str, str]:
    """Schedule setting (SWEEP_SCHEDULE) -> the function whose timer binds it (delta_sweep), from the source."""
    timers: dict[str, str] = {}
    for node in ast.walk(ast.parse(function_app.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef):
            continue
        for decorator in node.decorator_list:
            if isinstance(decorator, ast.Call) and getattr(decorator.func, "attr", "") == "timer_trigger":
                for keyword in decorator.keywords:
                    if keyword.arg == "schedule" and isinstance(keyword.value, ast.Constant):
                        timers[str(keyword.value.value).strip("%")] = node.name
    return timers


def param_name(setting: str) -> str:
    """SWEEP_SCHEDULE -> sweepSchedule (the Bicep parameter that writes the setting)."""
    first, *rest = setting.lower().split("_")
    return first + "".join(word.capitalize() for word in rest)


def cadence(ncrontab: str) -> str | None:
    """How a default reads in words ('hourly', 'every 15 minutes', 'every 6 hours', 'daily at 03:30 UTC'); None
    if not a plain one."""
    fields = ncrontab.split()
    if len(fields) != 6 or fields[0] != "0" or fields[3:] != ["*", "*", "*"]:
        return None
    minute, hour = fields[1], fields[2]
    if minute.isdigit() and hour.isdigit() and int(minute) < 60 and int(hour) < 24:
        return f"daily at {int(hour):02d}:{int(minute):02d} UTC"
    if minute == "0" and hour == "*":
        return "hourly"
    if (step := re.fullmatch(r"\*/(\d+)", minute)) and hour == "*":
        return f"every {step.group(1)} minutes"
    if minute == "0" and (step := re.fullmatch(r"\*/(\d+)", hour)):
        return f"every {step.group(1)} hours"
    return None


def check_schedule_descriptions(infra_dir: Path, function_app: Path) -> list[str]:
    """Each schedule parameter's @description (main.bicep, app/function.bicep) names the timer function that
    binds its setting and no other timer; main.bicep's also states the cadence of its default."""
    timers = timer_functions(function_app)
    templates = checks.load_templates(infra_dir)
    problems = []
    for setting, function in timers.items():
        name = param_name(setting)
        for template in ("main.bicep", "app/function.bicep"):
            param = (templates[template].tree.get("parameters") or {}).get(name)
            if param is None:
                problems.append(f"{template}: no param {name} for {setting}")
                continue
            text = str(checks.decorators(param).get("description", ""))
            named = {other for other in timers.values() if re.search(rf"\b{other}\b", text)}
            if named != {function}:
                problems.append(f"{template}: {name} drives {function} (function_app.py binds %{setting}%), "
                                f"but its description names {sorted(named) or 'no timer'}: {text!r}")
            if template == "main.bicep":
                words = cadence(str(param.get("default", "")))
                if words is None or f"{words} by default" not in text:
                    problems.append(f"main.bicep: {name} default {param.get('default')!r} is "
                                    f"{words or 'not a plain cadence'}, but its description says {text!r}")
    return problems


def check_tenant(infra_dir: Path) -> list[str]:
    """No `tenantId` parameter: the managed identity, its Graph app roles and Key Vault live in the deployment's
    tenant, so the app can only manage that one; every module gets `tenant().tenantId`."""
    main = checks.load_templates(infra_dir)["main.bicep"].tree
    problems = []
    if "tenantId" in (main.get("parameters") or {}):
        problems.append("main.bicep: param tenantId lets a deployment name a tenant its identity cannot act in; "
                        "use tenant().tenantId")
    variables = main.get("variables") or {}
    for symbol, module in (main.get("modules") or {}).items():
        value = checks.dig(module, "config", "params", "tenantId")
        if value is None:
            continue
        rendered = checks.render(value)
        if rendered in variables:
            rendered = checks.render(variables[rendered]["value"])
        if rendered != "tenant().tenantId":
            problems.append(f"main.bicep: module {symbol} gets tenantId {rendered}, not tenant().tenantId")
    return problems


def test_schedule_descriptions_name_their_timer() -> None:
    """Every schedule's description names the function function_app.py binds to it, with its default cadence."""
    assert set(timer_functions(REPO_ROOT / "function_app.py")) == {
        "POLICY_SCHEDULE", "SWEEP_SCHEDULE", "TRACKER_SCHEDULE", "SUBSCRIPTION_SCHEDULE", "EVENTS_PURGE_SCHEDULE"}
    assert check_schedule_descriptions(checks.INFRA_DIR, REPO_ROOT / "function_app.py") == []


def test_swapped_schedule_descriptions_are_reported(mutate: Mutate) -> None:
    """Swapping the sweep and tracker descriptions back (as they once were) fails the check for both."""
    text = (checks.INFRA_DIR / "main.bicep").read_text(encoding="utf-8")
    sweep = re.search(r"@description\('([^']*)'\)\nparam sweepSchedule", text)
    tracker = re.search(r"@description\('([^']*)'\)\nparam trackerSchedule", text)
    assert sweep and tracker
    infra = mutate(MAIN, sweep.group(1), "SWAP")
    infra = mutate(MAIN, tracker.group(1), sweep.group(1))
    infra = mutate(MAIN, "SWAP", tracker.group(1))
    problems = check_schedule_descriptions(infra, REPO_ROOT / "function_app.py")
    assert any("sweepSchedule drives delta_sweep" in p for p in problems), problems
    assert any("trackerSchedule drives reregistration_tracker" in p for p in problems), problems


def test_a_wrong_cadence_is_reported(mutate: Mutate) -> None:
    """A default changed without its description (every 5 minutes, still described as 15) is reported."""
    infra = mutate(MAIN, "param sweepSchedule string = '0 */15 * * * *'",
                   "param sweepSchedule string = '0 */5 * * * *'")
    problems = check_schedule_descriptions(infra, REPO_ROOT / "function_app.py")
    assert any("every 5 minutes" in p for p in problems), problems


def test_the_app_manages_the_deployment_tenant() -> None:
    """main.bicep takes no tenantId parameter and hands every module tenant().tenantId."""
    assert check_tenant(checks.INFRA_DIR) == []


def test_a_tenant_parameter_is_reported(mutate: Mutate) -> None:
    """Bringing back `param tenantId` (any tenant a deployer types) fails the tenant check."""
    infra = mutate(MAIN, "var tenantId = tenant().tenantId",
                   "@minLength(36)\n@maxLength(36)\n@description('Entra tenant.')\n"
                   "param tenantId string = tenant().tenantId")
    assert checks.pycep_parse_errors(infra) == []
    assert any("param tenantId" in p for p in check_tenant(infra))


def test_docs_describe_the_schedules_as_the_templates_do() -> None:
    """README's timer table binds each function to its setting, and no doc calls the delta query a tracker."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    for setting, function in timer_functions(REPO_ROOT / "function_app.py").items():
        assert f"| `{function}` | `%{setting}%` |" in readme, function
    for doc in ("README.md", "docs/deployment.md", "docs/architecture.md"):
        text = (REPO_ROOT / doc).read_text(encoding="utf-8").lower()
        assert "upn tracker (delta" not in text and "stale-passkey sweep" not in text, doc
