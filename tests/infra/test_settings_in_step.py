"""The app settings the Bicep writes and the settings the code reads stay in step."""
from __future__ import annotations

from pathlib import Path

import bicep_checks as checks
from bicep_checks import REPO_ROOT, Mutate

from shared import config

FUNCTION_FILE = "infra/app/function.bicep"


def test_templates_set_every_setting_the_code_reads() -> None:
    """Every name in APP_SETTINGS except the local-only ones is written by the templates."""
    written = set(checks.app_settings_values(checks.INFRA_DIR))
    missing = set(config.APP_SETTINGS) - set(config.LOCAL_ONLY_SETTINGS) - written
    assert not missing, f"code reads settings the templates never set: {sorted(missing)}"


def test_templates_set_nothing_the_code_does_not_read() -> None:
    """Every setting the templates write is read by the code or is an allow-listed host setting."""
    problems = checks.check_settings_in_step(checks.INFRA_DIR, config.APP_SETTINGS, config.LOCAL_ONLY_SETTINGS)
    assert problems == []


def test_host_allow_list_is_explained_and_used() -> None:
    """Each allow-listed host setting has a reason, is written, and is not one the code reads."""
    written = set(checks.app_settings_values(checks.INFRA_DIR))
    for name, reason in checks.HOST_SETTINGS.items():
        assert len(reason.split()) >= 4, f"{name}: the allow-list entry needs a reason"
        assert name in written, f"{name} is allow-listed but the templates do not write it (stale entry)"
        assert name not in config.APP_SETTINGS, f"{name} is read by the code: list it in APP_SETTINGS only"


def test_local_only_settings_are_never_deployed() -> None:
    """STATE_STORAGE (a connection string) and GRAPH_DEV_TOKEN never reach Azure."""
    written = set(checks.app_settings_values(checks.INFRA_DIR))
    assert written.isdisjoint(config.LOCAL_ONLY_SETTINGS)


def test_schedules_are_app_settings() -> None:
    """The five timer schedules the host resolves through %NAME% are app settings the Bicep writes."""
    schedules = {name for name in config.APP_SETTINGS if name.endswith("_SCHEDULE")}
    assert schedules == {"POLICY_SCHEDULE", "SWEEP_SCHEDULE", "TRACKER_SCHEDULE", "SUBSCRIPTION_SCHEDULE",
                         "EVENTS_PURGE_SCHEDULE"}
    assert schedules <= set(checks.app_settings_values(checks.INFRA_DIR))


def test_binding_expressions_in_function_app_are_known_settings(tmp_path: Path) -> None:
    """Each %NAME% in function_app.py is listed in APP_SETTINGS (until it exists: the four schedules)."""
    function_app = REPO_ROOT / "function_app.py"
    if not function_app.is_file():  # not wired yet: check the expressions the timers will use
        function_app = tmp_path / "function_app.py"
        function_app.write_text("".join(f'@app.timer_trigger(schedule="%{name}%")\n' for name in (
            "POLICY_SCHEDULE", "SWEEP_SCHEDULE", "TRACKER_SCHEDULE", "SUBSCRIPTION_SCHEDULE")), encoding="utf-8")
    assert checks.binding_expression_problems(function_app, config.APP_SETTINGS) == []


def test_binding_expression_check_reports_unknown_name(tmp_path: Path) -> None:
    """A %NAME% that APP_SETTINGS does not list is reported; known ones are not."""
    source = tmp_path / "function_app.py"
    source.write_text('@app.timer_trigger(schedule="%POLICY_SCHEDULE%")\n'
                      '@app.timer_trigger(schedule="%NIGHTLY_SCHEDULE%")\n', encoding="utf-8")
    problems = checks.binding_expression_problems(source, config.APP_SETTINGS)
    assert len(problems) == 1 and "NIGHTLY_SCHEDULE" in problems[0]


def test_dropping_a_setting_the_code_reads_is_reported(mutate: Mutate) -> None:
    """Removing POLICY_FILE from the app settings fails the check, naming the setting."""
    infra = mutate(FUNCTION_FILE, "    POLICY_FILE: policyFile\n", "")
    problems = checks.check_settings_in_step(infra, config.APP_SETTINGS, config.LOCAL_ONLY_SETTINGS)
    assert problems and all("POLICY_FILE" in p for p in problems)


def test_setting_the_code_does_not_read_is_reported(mutate: Mutate) -> None:
    """An app setting nobody reads (and not a host setting) fails the check."""
    infra = mutate(FUNCTION_FILE, "    POLICY_FILE: policyFile\n",
                   "    POLICY_FILE: policyFile\n    LEGACY_MODE: 'on'\n")
    problems = checks.check_settings_in_step(infra, config.APP_SETTINGS, config.LOCAL_ONLY_SETTINGS)
    assert problems and all("LEGACY_MODE" in p for p in problems)


def test_local_only_setting_in_templates_is_reported(mutate: Mutate) -> None:
    """Writing the dev-only GRAPH_DEV_TOKEN into Azure fails the check."""
    infra = mutate(FUNCTION_FILE, "    POLICY_FILE: policyFile\n",
                   "    POLICY_FILE: policyFile\n    GRAPH_DEV_TOKEN: 'dev'\n")
    problems = checks.check_settings_in_step(infra, config.APP_SETTINGS, config.LOCAL_ONLY_SETTINGS)
    assert any("GRAPH_DEV_TOKEN" in p and "local-only" in p for p in problems)


def test_settings_read_from_text_when_pycep_cannot_express_them(mutate: Mutate) -> None:
    """A settings object built with union() is still read (raw-text fallback), so drift stays visible."""
    infra = mutate(FUNCTION_FILE, "  properties: {\n    // Host storage",
                   "  properties: union({}, {\n    // Host storage")
    infra = mutate(FUNCTION_FILE, "    SUBSCRIPTION_SCHEDULE: subscriptionSchedule\n  }\n}",
                   "    SUBSCRIPTION_SCHEDULE: subscriptionSchedule\n  })\n}")
    settings = next(r for r in checks.of_type(checks.load_templates(infra), "Microsoft.Web/sites/config"))
    assert "function" in settings.body["properties"], "the mutation must defeat pycep's object form"
    written = set(checks.app_settings_values(infra))
    assert written == set(checks.app_settings_values(checks.INFRA_DIR))


def test_platform_settings_are_never_written() -> None:
    """WEBSITE_AUTH_ENABLED is App Service's own report that authentication is on: infra never writes it."""
    written = set(checks.app_settings_values(checks.INFRA_DIR))
    assert written.isdisjoint(config.PLATFORM_SETTINGS)
    assert checks.check_settings_in_step(checks.INFRA_DIR, config.APP_SETTINGS, config.LOCAL_ONLY_SETTINGS,
                                         platform=config.PLATFORM_SETTINGS) == []


def test_writing_a_platform_setting_is_reported(mutate: Mutate) -> None:
    """An app setting WEBSITE_AUTH_ENABLED would make the app trust forgeable principal headers: reported."""
    infra = mutate(FUNCTION_FILE, "    POLICY_FILE: policyFile\n",
                   "    POLICY_FILE: policyFile\n    WEBSITE_AUTH_ENABLED: 'True'\n")
    problems = checks.check_settings_in_step(infra, config.APP_SETTINGS, config.LOCAL_ONLY_SETTINGS,
                                             platform=config.PLATFORM_SETTINGS)
    assert any("WEBSITE_AUTH_ENABLED" in p and "platform setting" in p for p in problems), problems
