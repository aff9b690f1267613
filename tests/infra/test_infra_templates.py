"""infra/ parses with every offline parser, passes checkov with reasoned skips, and its azd files fit."""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import bicep_checks as checks
from bicep_checks import REPO_ROOT, CheckovRun, Mutate

CHECKOV_CONFIG = checks.INFRA_DIR / ".checkov.yaml"


def test_every_template_parses_with_pycep() -> None:
    """pycep-parser 0.7.1 parses every .bicep file (checkov and these tests depend on it)."""
    assert checks.pycep_parse_errors(checks.INFRA_DIR) == []


def test_every_template_parses_with_tree_sitter() -> None:
    """tree-sitter-bicep finds no ERROR or MISSING node in any .bicep file."""
    assert checks.tree_sitter_errors(checks.INFRA_DIR) == []


def test_main_composes_modules_that_exist() -> None:
    """main.bicep is subscription-scoped and every module it deploys is a file under infra/app/."""
    main = checks.load_templates(checks.INFRA_DIR)["main.bicep"]
    assert checks.dig(main.tree, "globals", "scope", "value") == "subscription"
    modules = main.tree["modules"]
    assert len(modules) >= 6
    for symbol, module in modules.items():
        path = module["detail"]["path"]
        assert path.startswith("app/") and (checks.INFRA_DIR / path).is_file(), f"module {symbol}: {path}"


def test_checkov_passes_with_the_documented_skips(checkov_run: CheckovRun) -> None:
    """checkov parses everything and fails only checks infra/.checkov.yaml skips."""
    summary = checkov_run.report["summary"]
    assert summary["parsing_errors"] == 0, checkov_run.stderr[-2000:]
    assert summary["resource_count"] > 0
    unexpected = [(c["check_id"], c["resource"], c["file_path"]) for c in checkov_run.failed
                  if c["check_id"] not in checks.checkov_skips(CHECKOV_CONFIG)]
    assert unexpected == []
    assert (checkov_run.returncode != 0) == bool(checkov_run.failed), "exit code disagrees with the report"


def test_every_checkov_skip_is_still_needed(checkov_run: CheckovRun) -> None:
    """Each skipped check still fails without its skip (no stale skips hiding future findings)."""
    stale = set(checks.checkov_skips(CHECKOV_CONFIG)) - checkov_run.failed_ids
    assert stale == set()


def _checkov_one_check(bicep: Path, check_id: str) -> dict[str, list[str]]:
    """Run checkov with a single check on one file (offline); {"passed": [resources], "failed": [resources]}."""
    from conftest import checkov_bin

    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(bicep.parent), "CKV_PARSE_ERROR_FAIL": "true",
           "HTTPS_PROXY": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1"}
    proc = subprocess.run([str(checkov_bin()), "-f", str(bicep), "--framework", "bicep", "--skip-download",
                           "--compact", "--check", check_id, "-o", "json"],
                          cwd=bicep.parent, env=env, capture_output=True, text=True, timeout=120, check=False)
    results = json.loads(proc.stdout)["results"]
    return {kind: [c["resource"] for c in results.get(f"{kind}_checks", [])] for kind in ("passed", "failed")}


def test_checkov_sees_app_service_authentication_on(mutate: Mutate, tmp_path: Path) -> None:
    """checkov's function-app authentication check (CKV_AZURE_56) passes on authsettingsV2, and fails when
    App Service Authentication is switched off (so the pass is not vacuous)."""
    found = _checkov_one_check(tmp_path / "infra" / "app" / "function.bicep", "CKV_AZURE_56")  # mutate's copy
    assert any("authSettings" in r for r in found["passed"]) and found["failed"] == [], found
    infra = mutate("infra/app/function.bicep", "    platform: {\n      enabled: true\n",
                   "    platform: {\n      enabled: false\n")
    found = _checkov_one_check(infra / "app" / "function.bicep", "CKV_AZURE_56")
    assert any("authSettings" in r for r in found["failed"]), found


def test_every_checkov_skip_has_a_reason() -> None:
    """Each skip-check entry in infra/.checkov.yaml says why on the same line."""
    assert checks.check_checkov_skips(CHECKOV_CONFIG) == []


def test_checkov_skip_without_reason_is_reported(mutate: Mutate) -> None:
    """Dropping a skip's reason fails the reason check, naming the check id."""
    infra = mutate("infra/.checkov.yaml", "  - CKV_AZURE_17   # Incoming", "  - CKV_AZURE_17\n  # Incoming")
    problems = checks.check_checkov_skips(infra / ".checkov.yaml")
    assert problems == [".checkov.yaml: skip CKV_AZURE_17 has no reason"]


def test_syntax_error_is_reported_by_both_parsers(mutate: Mutate) -> None:
    """A template with a missing closing brace fails the pycep and tree-sitter checks."""
    infra = mutate("infra/app/identity.bicep", "  tags: tags\n}", "  tags: tags\n")
    assert any(p.startswith("app/identity.bicep") for p in checks.pycep_parse_errors(infra))
    assert any(p.startswith("app/identity.bicep") for p in checks.tree_sitter_errors(infra))


def test_bicepconfig_registers_the_graph_extension_by_alias() -> None:
    """Templates use `extension <alias>` (pycep cannot parse `extension 'br:…'`) and bicepconfig.json
    maps each alias to the Microsoft Graph extension in the registry."""
    aliases = json.loads((checks.INFRA_DIR / "bicepconfig.json").read_text(encoding="utf-8"))["extensions"]
    assert re.fullmatch(r"br:mcr\.microsoft\.com/bicep/extensions/microsoftgraph/v1\.0:\d+\.\d+\.\d+(-preview)?",
                        aliases["microsoftGraphV1"])
    used = set()
    for path in checks.bicep_files(checks.INFRA_DIR):
        for statement in re.findall(r"(?m)^extension\s+(\S+)", path.read_text(encoding="utf-8")):
            assert not statement.startswith("'"), f"{path.name}: use the bicepconfig alias, not {statement}"
            used.add(statement)
    assert used == {"microsoftGraphV1"}
    assert set(used) <= set(aliases)


def test_azure_yaml_declares_the_python_function_service() -> None:
    """azure.yaml has one service `api`: project `.`, language python, host function, Bicep in infra/."""
    text = (REPO_ROOT / "azure.yaml").read_text(encoding="utf-8")
    service = re.search(r"(?ms)^services:\n  api:\n((?:    .*\n?)+)", text)
    assert service, "services: api: block not found"
    fields = dict(re.findall(r"(?m)^    (\w+):\s*(\S+)\s*$", service.group(1)))
    assert fields == {"project": ".", "language": "python", "host": "function"}
    assert re.search(r"(?m)^  path: infra$", text) and re.search(r"(?m)^  module: main$", text)


def test_main_parameters_map_the_azd_environment() -> None:
    """main.parameters.json takes the environment name and location from azd and sets only declared params."""
    values = json.loads((checks.INFRA_DIR / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert values["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert values["location"]["value"] == "${AZURE_LOCATION}"
    assert checks.check_schedules(checks.INFRA_DIR) == []
