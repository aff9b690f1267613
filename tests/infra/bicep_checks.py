"""Offline checks of the Bicep in infra/ that no local tool performs.

There is no Bicep CLI here and checkov cannot see shared-key access, role-assignment scopes, Graph
permissions or `functionAppConfig` (docs: local-stack.md). These checks parse the templates with
pycep-parser 0.7.1 (and read the raw text where pycep is lossy) and return a list of problems; an
empty list means the check passes. The real-template tests and the mutation tests call the same
functions, so every check is shown to fail on a broken template.

pycep quirks handled here: identifiers and string literals both come back as `str`; operator
precedence inside `a.b == c` is mis-nested, so lambdas are checked on the raw text.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache, wraps
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA_DIR = REPO_ROOT / "infra"

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
#: The Azure CLI's well-known client id, pre-authorized on the API app registration (api-app.bicep) so
#: `az account get-access-token --resource api://…` works for administrators.
AZURE_CLI_APP_ID = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
GRAPH_PERMISSIONS_FILE = "graph-permissions.json"
#: The `when` values graph-permissions.json may use, and what selects each.
GRAPH_CONDITIONS = {
    "always": "every deployment",
    "audit": "enforcementMode == 'audit'",
    "enforce": "enforcementMode == 'enforce'",
    "removeStalePasskeys": "removeStalePasskeys == true",
    "keepStalePasskeys": "removeStalePasskeys == false",
    "readApplications": "grantApplicationRead == true",
}

#: Azure built-in roles the identity may hold, and the one resource type each may be scoped to.
#: docs/deployment.md explains each; a role or scope outside this table is a finding.
ROLE_SCOPES: dict[str, tuple[str, str]] = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": ("Storage Blob Data Owner", "Microsoft.Storage/storageAccounts"),
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": (
        "Storage Queue Data Contributor", "Microsoft.Storage/storageAccounts/queueServices/queues"),
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": (
        "Storage Table Data Contributor", "Microsoft.Storage/storageAccounts/tableServices/tables"),
    "4633458b-17de-408a-b874-0445c86b69e6": ("Key Vault Secrets User", "Microsoft.KeyVault/vaults/secrets"),
    "3913510d-42f4-4e42-8a64-420c390055eb": ("Monitoring Metrics Publisher", "Microsoft.Insights/components"),
}

#: App settings the Functions host (not our code) reads; allowed in Bicep although shared.config
#: does not list them. Each with the reason it must be there.
HOST_SETTINGS: dict[str, str] = {
    "AzureWebJobsStorage__accountName": "host storage (timer locks, keys) over the managed identity",
    "AzureWebJobsStorage__credential": "tells the host to use a managed identity for host storage",
    "AzureWebJobsStorage__clientId": "which user-assigned identity the host uses for host storage",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "Entra-authenticated telemetry (App Insights local auth is off)",
    "STATE_STORAGE__credential": "the queue trigger's STATE_STORAGE connection uses a managed identity",
}

_SECRET_MARKERS = (
    "listkeys(", "listkeys ", ".listkeys", "listconnectionstrings", "listaccountsas", "listservicesas",
    "accountkey=", "sharedaccesssignature", "defaultendpointsprotocol", "sharedaccesskey", "-----begin",
    "primarykey", "secondarykey", "primarysharedkey", "instrumentationkey=",
)
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_TOKEN = re.compile(r"(?<![A-Za-z0-9+/_.-])[A-Za-z0-9+/]{32,}={0,2}(?![A-Za-z0-9+/_.-])")
_GRAPH_ROLE_LITERAL = re.compile(r"'[A-Z][A-Za-z]+(?:-[A-Za-z]+)?\.(?:Read|ReadWrite)(?:\.[A-Za-z]+)*'")
_KV_REFERENCE = re.compile(r"^@Microsoft\.KeyVault\(VaultName=\$\{\w+\};SecretName=\$\{\w+\}\)$")
_AZD_VALUE = re.compile(r"^(\$\{[A-Z0-9_]+(=[^}]*)?\}|\$\(secretOrRandomPassword \$\{[A-Z0-9_]+\} [a-z0-9-]+\))$")
_NCRONTAB_FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*$")


#: A mutation-test helper (tests/infra/conftest.py `mutate`): edits a copy of infra/, returns its path.
Mutate = Callable[..., Path]


@dataclass(frozen=True)
class CheckovRun:
    """One checkov run over infra/ with no checks skipped; the tests apply infra/.checkov.yaml."""

    returncode: int
    report: dict[str, Any]
    stderr: str

    @property
    def failed(self) -> list[dict[str, Any]]:
        return list(self.report.get("results", {}).get("failed_checks", []))

    @property
    def failed_ids(self) -> set[str]:
        return {check["check_id"] for check in self.failed}


class BicepShapeError(Exception):
    """A template is not in the shape a check can follow (reported as a finding, never ignored)."""


@dataclass(frozen=True)
class Template:
    """One parsed .bicep file: its path relative to infra/, raw text and pycep tree."""

    name: str
    text: str
    tree: dict[str, Any]


@dataclass(frozen=True)
class Resource:
    """One resource declaration, with its loop (if any) unwrapped into `body`."""

    template: Template
    symbol: str
    type: str
    existing: bool
    loop: dict[str, Any] | None
    body: dict[str, Any]

    @property
    def where(self) -> str:
        return f"{self.template.name}:{self.symbol}"


def reports_shape_errors(check: Callable[..., list[str]]) -> Callable[..., list[str]]:
    """Turn a template the check cannot follow (unparseable, unexpected shape) into a finding."""
    @wraps(check)
    def run(*args: Any, **kwargs: Any) -> list[str]:
        try:
            return check(*args, **kwargs)
        except BicepShapeError as exc:
            return [f"{check.__name__}: {exc}"]
    return run


# --- loading -------------------------------------------------------------------------------------

def bicep_files(infra_dir: Path) -> list[Path]:
    """Every .bicep file under infra_dir, sorted."""
    return sorted(infra_dir.rglob("*.bicep"))


@cache
def _parser() -> Any:
    from pycep import BicepParser  # imported lazily: it compiles a Lark grammar

    return BicepParser()


@cache
def _parse_text(text: str) -> dict[str, Any]:
    return _parser().parse(text=text)  # type: ignore[no-any-return]


def parse_bicep(path: Path) -> dict[str, Any]:
    """The pycep-parser tree of one file (cached by content: mutated copies re-parse only what changed).
    The tree is shared between callers: treat it as read-only."""
    return _parse_text(path.read_text(encoding="utf-8"))


def load_templates(infra_dir: Path) -> dict[str, Template]:
    """Parse every template; a file pycep cannot parse raises with its name."""
    templates = {}
    for path in bicep_files(infra_dir):
        name = path.relative_to(infra_dir).as_posix()
        try:
            tree = parse_bicep(path)
        except Exception as exc:  # pycep raises lark errors of many types
            raise BicepShapeError(f"{name}: pycep-parser cannot parse it: {type(exc).__name__}") from exc
        templates[name] = Template(name=name, text=path.read_text(encoding="utf-8"), tree=tree)
    return templates


def pycep_parse_errors(infra_dir: Path) -> list[str]:
    """Files pycep-parser 0.7.1 cannot parse (checkov and these checks would silently lose them)."""
    problems = []
    files = bicep_files(infra_dir)
    if not files:
        problems.append(f"no .bicep files under {infra_dir}")
    for path in files:
        try:
            parse_bicep(path)
        except Exception as exc:
            problems.append(f"{path.relative_to(infra_dir)}: {type(exc).__name__}: {str(exc)[:200]}")
    return problems


def tree_sitter_errors(infra_dir: Path) -> list[str]:
    """ERROR/MISSING nodes from tree-sitter-bicep (extension lines blanked: it rejects them all)."""
    import tree_sitter_bicep
    from tree_sitter import Language, Node, Parser

    parser = Parser(Language(tree_sitter_bicep.language()))
    problems = []
    for path in bicep_files(infra_dir):
        source = path.read_text(encoding="utf-8")
        source = re.sub(r"(?m)^extension .*$", lambda m: " " * len(m.group(0)), source)
        stack: list[Node] = [parser.parse(source.encode()).root_node]
        while stack:
            node = stack.pop()
            if node.type == "ERROR" or node.is_missing:
                row, col = node.start_point
                kind = "MISSING" if node.is_missing else "ERROR"
                problems.append(f"{path.relative_to(infra_dir)}:{row + 1}:{col + 1}: {kind} {node.type}")
            stack.extend(node.children)
    return problems


def resources(templates: Mapping[str, Template]) -> list[Resource]:
    """Every resource of every template."""
    found = []
    for template in templates.values():
        for symbol, res in (template.tree.get("resources") or {}).items():
            config = res.get("config") or {}
            loop = None
            if isinstance(config, dict) and "loop_type" in config:
                loop, config = config["loop_type"], config.get("config") or {}
            elif isinstance(config, dict) and set(config) == {"condition", "config"}:
                config = config["config"] or {}
            found.append(Resource(template, symbol, res["type"], bool(res.get("existing")), loop, config))
    return found


def of_type(templates: Mapping[str, Template], resource_type: str, *, existing: bool | None = False) -> list[Resource]:
    """Resources of one type; `existing=None` includes both declared and `existing` references."""
    return [r for r in resources(templates)
            if r.type.lower() == resource_type.lower() and (existing is None or r.existing == existing)]


def dig(node: Any, *keys: str) -> Any:
    """node[k1][k2]…, or None when a key is absent or a level is not a mapping."""
    for key in keys:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def render(node: Any) -> str:
    """A pycep expression as compact Bicep-like text (for messages and shape comparisons)."""
    if isinstance(node, bool):
        return "true" if node else "false"
    if node is None or isinstance(node, (int, str)):
        return "null" if node is None else str(node)
    if isinstance(node, list):
        return "[" + ", ".join(render(n) for n in node) + "]"
    if isinstance(node, dict) and "operator" in node:
        op = node["operator"]
        operands = op.get("operands") or {}
        if op["type"] == "property_accessor":
            return f"{render(operands['operand_1'])}.{render(operands['operand_2'])}"
        if op["type"] == "index_accessor":
            return f"{render(operands['operand_1'])}[{render(operands['operand_2'])}]"
        return f"{op['type']}(" + ", ".join(render(v) for v in operands.values()) + ")"
    if isinstance(node, dict) and "function" in node:
        fn = node["function"]
        args = [render(v) for v in (fn.get("parameters") or {}).values() if v is not None]
        return f"{fn['type']}(" + ", ".join(args) + ")"
    if isinstance(node, dict) and node.get("type") == "lambda_expression":
        detail = node["detail"]
        return f"{detail['var_1']} => {render(detail['expression'])}"
    return json.dumps(node, sort_keys=True)


def decorators(declaration: Mapping[str, Any]) -> dict[str, Any]:
    """A param's or output's decorators by type (description, secure, min_value, allowed, …)."""
    return {d["type"]: d.get("argument", True) for d in declaration.get("decorators") or []}


def _symbol_of(node: Any) -> str | None:
    """`x` for `x` or `x[i]` (a resource symbol used as a scope)."""
    if isinstance(node, str):
        return node
    if dig(node, "operator", "type") == "index_accessor":
        inner = node["operator"]["operands"]["operand_1"]
        return inner if isinstance(inner, str) else None
    return None


def _resource_block(template: Template, symbol: str) -> str:
    """The raw text of one resource declaration (from `resource <symbol>` to the next top-level line)."""
    match = re.search(rf"(?m)^resource {re.escape(symbol)} .*?(?=^\S|\Z)", template.text, re.S)
    return match.group(0) if match else ""


# --- storage -------------------------------------------------------------------------------------

@reports_shape_errors
def check_storage_security(infra_dir: Path) -> list[str]:
    """Storage accounts: no shared keys, TLS 1.2, no public blobs, HTTPS only, OAuth by default."""
    templates = load_templates(infra_dir)
    accounts = of_type(templates, "Microsoft.Storage/storageAccounts")
    problems = [] if accounts else ["no storage account is declared"]
    required = {
        "allowSharedKeyAccess": False,
        "minimumTlsVersion": "TLS1_2",
        "allowBlobPublicAccess": False,
        "supportsHttpsTrafficOnly": True,
        "defaultToOAuthAuthentication": True,
    }
    for account in accounts:
        props = account.body.get("properties") or {}
        for key, want in required.items():
            got = props.get(key)
            if type(got) is not type(want) or got != want:
                problems.append(f"{account.where}: properties.{key} must be {render(want)}, is {render(got)}")
    for container in of_type(templates, "Microsoft.Storage/storageAccounts/blobServices/containers"):
        access = dig(container.body, "properties", "publicAccess")
        if access not in (None, "None"):
            problems.append(f"{container.where}: publicAccess must be 'None', is {render(access)}")
    return problems


@reports_shape_errors
def check_state_names(infra_dir: Path, queue_name: str, *more_queues: str) -> list[str]:
    """The app's tables and queues are declared with exactly the names the code uses."""
    templates = load_templates(infra_dir)
    main = templates.get("main.bicep")
    if main is None:
        return ["main.bicep is missing"]
    variables = main.tree.get("variables") or {}
    problems = []
    want_tables = ["runs", "plans", "flags", "snapshots", "checkpoints", "events", "holders"]
    tables = dig(variables, "tableNames", "value")
    if sorted(tables or []) != sorted(want_tables):
        problems.append(f"main.bicep: tableNames must be {want_tables}, is {render(tables)}")
    queues = dig(variables, "queueNames", "value")
    want_queues = [q for name in (queue_name, *more_queues) for q in (name, f"{name}-poison")]
    if sorted(queues or []) != sorted(want_queues):
        problems.append(f"main.bicep: queueNames must be {want_queues}, is {render(queues)}")
    for rtype, param in (("tableServices/tables", "tableNames"), ("queueServices/queues", "queueNames")):
        declared = [r for r in of_type(templates, f"Microsoft.Storage/storageAccounts/{rtype}")]
        if not declared or any(dig(r.loop, "detail", "array_name") != param for r in declared):
            problems.append(f"{rtype} must be declared by looping over the {param} parameter")
    return problems


# --- monitoring ----------------------------------------------------------------------------------

@reports_shape_errors
def check_monitoring(infra_dir: Path) -> list[str]:
    """App Insights is workspace-based with local (key) auth disabled; telemetry uses Entra auth."""
    templates = load_templates(infra_dir)
    components = of_type(templates, "Microsoft.Insights/components")
    problems = [] if components else ["no Application Insights component is declared"]
    for component in components:
        props = component.body.get("properties") or {}
        if props.get("DisableLocalAuth") is not True:
            problems.append(f"{component.where}: properties.DisableLocalAuth must be true")
        if not props.get("WorkspaceResourceId"):
            problems.append(f"{component.where}: must be workspace-based (properties.WorkspaceResourceId)")
    auth = app_settings_values(infra_dir).get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING")
    if not (isinstance(auth, str) and re.fullmatch(r"ClientId=\$\{\w+\};Authorization=AAD", auth)):
        problems.append(f"APPLICATIONINSIGHTS_AUTHENTICATION_STRING must be ClientId=<uami>;Authorization=AAD, "
                        f"is {render(auth)}")
    return problems


# --- key vault and secrets -----------------------------------------------------------------------

@reports_shape_errors
def check_key_vault(infra_dir: Path) -> list[str]:
    """Key Vault in RBAC mode with soft delete and purge protection; secrets come from secure params."""
    templates = load_templates(infra_dir)
    vaults = of_type(templates, "Microsoft.KeyVault/vaults")
    problems = [] if vaults else ["no Key Vault is declared"]
    for vault in vaults:
        props = vault.body.get("properties") or {}
        for key in ("enableRbacAuthorization", "enableSoftDelete", "enablePurgeProtection"):
            if props.get(key) is not True:
                problems.append(f"{vault.where}: properties.{key} must be true, is {render(props.get(key))}")
        if props.get("accessPolicies"):
            problems.append(f"{vault.where}: access policies are not used in RBAC mode")
    for secret in of_type(templates, "Microsoft.KeyVault/vaults/secrets"):
        value = dig(secret.body, "properties", "value")
        params = secret.template.tree.get("parameters") or {}
        if not (isinstance(value, str) and value in params and "secure" in decorators(params[value])):
            problems.append(f"{secret.where}: the value must be a @secure() parameter, is {render(value)}")
    return problems


def _looks_random(token: str) -> bool:
    """A key-like token: base64 mixing upper, lower and digits, or long hex (not prose or camelCase)."""
    if re.fullmatch(r"[0-9a-fA-F]{32,}", token):
        return True
    classes = sum(bool(re.search(p, token)) for p in (r"[a-z]", r"[A-Z]", r"[0-9]"))
    return classes == 3 and len(re.findall(r"[0-9]", token)) >= 3


@reports_shape_errors
def check_no_secrets(infra_dir: Path) -> list[str]:
    """No keys, connection strings with keys, or secret-looking literals anywhere in infra/."""
    problems = []
    files = [p for p in sorted(infra_dir.rglob("*")) if p.is_file()]
    azure_yaml = infra_dir.parent / "azure.yaml"
    if azure_yaml.is_file():
        files.append(azure_yaml)
    allowed_guids = set(ROLE_SCOPES) | {GRAPH_APP_ID, AZURE_CLI_APP_ID}
    for path in files:
        name = path.name if path == azure_yaml else path.relative_to(infra_dir).as_posix()
        text = path.read_text(encoding="utf-8")
        lowered = text.lower()
        for marker in _SECRET_MARKERS:
            if marker in lowered:
                problems.append(f"{name}: contains {marker.strip()!r} (keys and key-based connection strings "
                                f"are not used)")
        for guid in set(_GUID.findall(text)) - allowed_guids:
            problems.append(f"{name}: literal GUID {guid[:8]}… is neither a documented role id nor Graph's app id")
        for token in _TOKEN.findall(text):
            if _looks_random(token):
                problems.append(f"{name}: secret-looking literal {token[:4]}… ({len(token)} characters)")
    templates = load_templates(infra_dir)
    for template in templates.values():
        for pname, param in (template.tree.get("parameters") or {}).items():
            if "secure" not in decorators(param):
                continue
            default = param.get("default")
            if default is not None and "new_guid" not in json.dumps(default):
                problems.append(f"{template.name}: @secure() param {pname} has a default that is not newGuid()-based")
    params_file = infra_dir / "main.parameters.json"
    main = templates.get("main.bicep")
    if params_file.is_file() and main is not None:
        main_params = main.tree.get("parameters") or {}
        values = json.loads(params_file.read_text(encoding="utf-8")).get("parameters", {})
        for pname, entry in values.items():
            if pname in main_params and "secure" in decorators(main_params[pname]):
                value = entry.get("value") if isinstance(entry, dict) else None
                if not (isinstance(value, str) and _AZD_VALUE.match(value)) or "reference" in entry:
                    problems.append(f"main.parameters.json: secure parameter {pname} must come from azd "
                                    f"(${{VAR}} or $(secretOrRandomPassword …)), not a literal")
    settings = app_settings_values(infra_dir)
    for setting in ("NOTIFICATION_CLIENT_STATE", "TICKET_WEBHOOK_SECRET"):
        value = settings.get(setting)
        if not (isinstance(value, str) and _KV_REFERENCE.match(value)):
            problems.append(f"app setting {setting} must be a Key Vault reference "
                            f"@Microsoft.KeyVault(VaultName=…;SecretName=…), is {render(value)[:40]}")
    sites = of_type(templates, "Microsoft.Web/sites")
    for site in sites:
        if not dig(site.body, "properties", "keyVaultReferenceIdentity"):
            problems.append(f"{site.where}: keyVaultReferenceIdentity must name the user-assigned identity")
    return problems


@reports_shape_errors
def check_outputs(infra_dir: Path) -> list[str]:
    """Outputs are described and carry no secret: no secure param, key, connection string or token."""
    problems = []
    secret_name = re.compile(r"(?i)(secret|password|pwd|connectionstring|accountkey|token|clientstate|"
                             r"instrumentationkey|sas)(?!.*names?$)")
    forbidden = ("connectionstring", "listkeys", "primarykey", "secondarykey", "instrumentationkey",
                 "properties.value", "authenticationstring")
    for template in load_templates(infra_dir).values():
        params = template.tree.get("parameters") or {}
        secure = {name for name, p in params.items() if "secure" in decorators(p)}
        for name, output in (template.tree.get("outputs") or {}).items():
            where = f"{template.name}: output {name}"
            if not decorators(output).get("description"):
                problems.append(f"{where} has no @description")
            if secret_name.search(name):
                problems.append(f"{where}: the name suggests a secret")
            value = render(output.get("value"))
            if any(re.search(rf"(?<![\w.]){re.escape(p)}(?!\w)", value) for p in secure):
                problems.append(f"{where} outputs a @secure() parameter")
            if any(f in value.lower() for f in forbidden):
                problems.append(f"{where} outputs a connection string, key or secret value")
            if "secure" in decorators(output):
                problems.append(f"{where} is @secure(): outputs must not carry secrets at all")
    return problems


# --- role assignments ----------------------------------------------------------------------------

def _resolve_role_id(template: Template, node: Any) -> str | None:
    """The role definition GUID behind subscriptionResourceId('…/roleDefinitions', <x>)."""
    fn = dig(node, "function")
    if not fn or fn.get("type") != "subscription_resource_id":
        return None
    params = fn.get("parameters") or {}
    if params.get("resource_type") != "Microsoft.Authorization/roleDefinitions" or params.get("resource_name_2"):
        return None
    name = params.get("resource_name_1")
    if isinstance(name, str):
        if _GUID.fullmatch(name):
            return name.lower()
        value = dig(template.tree, "variables", name, "value")
        return value.lower() if isinstance(value, str) and _GUID.fullmatch(value) else None
    if isinstance(name, dict) and dig(name, "operator", "type") == "property_accessor":
        operands = name["operator"]["operands"]
        table = dig(template.tree, "variables", operands["operand_1"], "value")
        value = table.get(operands["operand_2"]) if isinstance(table, dict) else None
        return value.lower() if isinstance(value, str) and _GUID.fullmatch(value) else None
    return None


@reports_shape_errors
def check_role_assignments(infra_dir: Path) -> list[str]:
    """Each assignment: a documented role on the one resource type it may be scoped to (never a
    resource group or subscription), named guid(scope, principal, role), principalType ServicePrincipal."""
    templates = load_templates(infra_dir)
    problems = []
    assignments = of_type(templates, "Microsoft.Authorization/roleAssignments")
    if not assignments:
        problems.append("no role assignments are declared")
    seen_roles = set()
    for ra in assignments:
        body = ra.body
        declared = {r.symbol: r for r in resources({ra.template.name: ra.template})}
        scope_symbol = _symbol_of(body.get("scope"))
        scope = declared.get(scope_symbol) if scope_symbol else None
        if scope is None:
            problems.append(f"{ra.where}: scope must name a resource declared in {ra.template.name} "
                            f"(is {render(body.get('scope'))}); the deployment's resource group or "
                            f"subscription is never a scope")
        elif scope.type.lower() in ("microsoft.resources/resourcegroups", "microsoft.resources/subscriptions"):
            problems.append(f"{ra.where}: scoped to a {scope.type}")
        role_id = _resolve_role_id(ra.template, dig(body, "properties", "roleDefinitionId"))
        if role_id is None:
            problems.append(f"{ra.where}: roleDefinitionId must be subscriptionResourceId('Microsoft.Authorization/"
                            f"roleDefinitions', <GUID or var>)")
        elif role_id not in ROLE_SCOPES:
            problems.append(f"{ra.where}: role {role_id} is not a documented role of the identity")
        else:
            role_name, scope_type = ROLE_SCOPES[role_id]
            seen_roles.add(role_id)
            if scope is not None and scope.type.lower() != scope_type.lower():
                problems.append(f"{ra.where}: {role_name} must be scoped to a {scope_type}, is on a {scope.type}")
        if dig(body, "properties", "principalType") != "ServicePrincipal":
            problems.append(f"{ra.where}: properties.principalType must be 'ServicePrincipal'")
        name_fn = dig(body, "name", "function")
        name_args = [v for v in (name_fn or {}).get("parameters", {}).values() if v is not None]
        if not name_fn or name_fn.get("type") != "guid" or len(name_args) != 3:
            problems.append(f"{ra.where}: name must be guid(scope.id, principal, role)")
        else:
            if render(name_args[0]) != f"{render(body.get('scope'))}.id":
                problems.append(f"{ra.where}: name must start with the scope's id "
                                f"(guid({render(body.get('scope'))}.id, …))")
            if render(name_args[1]) != render(dig(body, "properties", "principalId")):
                problems.append(f"{ra.where}: name must use the assignment's principalId")
            if render(name_args[2]) != render(dig(body, "properties", "roleDefinitionId", "function", "parameters",
                                                  "resource_name_1")):
                problems.append(f"{ra.where}: name must use the assignment's role")
    for role_id in sorted(set(ROLE_SCOPES) - seen_roles):
        problems.append(f"role {ROLE_SCOPES[role_id][0]} is documented but never assigned")
    return problems


# --- function app --------------------------------------------------------------------------------

def _int_floor(template: Template, node: Any) -> int | None:
    """The smallest value an int expression can take: a literal, or a param's @minValue."""
    if isinstance(node, int) and not isinstance(node, bool):
        return node
    if isinstance(node, str):
        param = dig(template.tree, "parameters", node)
        if param is not None:
            floor = decorators(param).get("min_value")
            default = param.get("default")
            if isinstance(floor, int) and (default is None or (isinstance(default, int) and default >= floor)):
                return floor
    return None


@reports_shape_errors
def check_function_app(infra_dir: Path) -> list[str]:
    """Flex Consumption, Python 3.11, always-ready HTTP ≥ 1, one user-assigned identity, HTTPS/TLS 1.2,
    no FTP, no basic-auth publishing."""
    templates = load_templates(infra_dir)
    problems = []
    sites = of_type(templates, "Microsoft.Web/sites")
    if len(sites) != 1:
        return [f"exactly one function app must be declared, found {len(sites)}"]
    site = sites[0]
    props = site.body.get("properties") or {}
    if "functionapp" not in str(site.body.get("kind")):
        problems.append(f"{site.where}: kind must be a function app")
    identity = site.body.get("identity") or {}
    if identity.get("type") != "UserAssigned" or len(identity.get("userAssignedIdentities") or {}) != 1:
        problems.append(f"{site.where}: exactly one user-assigned identity (identity.type 'UserAssigned')")
    if props.get("httpsOnly") is not True:
        problems.append(f"{site.where}: properties.httpsOnly must be true")
    site_config = props.get("siteConfig") or {}
    if site_config.get("minTlsVersion") != "1.2":
        problems.append(f"{site.where}: siteConfig.minTlsVersion must be '1.2'")
    if site_config.get("ftpsState") != "Disabled":
        problems.append(f"{site.where}: siteConfig.ftpsState must be 'Disabled'")
    config = props.get("functionAppConfig") or {}
    runtime = config.get("runtime") or {}
    if runtime.get("name") != "python" or runtime.get("version") != "3.11":
        problems.append(f"{site.where}: functionAppConfig.runtime must be python 3.11, is "
                        f"{render(runtime.get('name'))} {render(runtime.get('version'))}")
    auth = dig(config, "deployment", "storage", "authentication") or {}
    if auth.get("type") != "UserAssignedIdentity" or not auth.get("userAssignedIdentityResourceId"):
        problems.append(f"{site.where}: the deployment container must use UserAssignedIdentity authentication")
    always_ready = dig(config, "scaleAndConcurrency", "alwaysReady") or []
    http = [e for e in always_ready if isinstance(e, dict) and e.get("name") == "http"]
    floor = _int_floor(site.template, http[0].get("instanceCount")) if http else None
    if floor is None or floor < 1:
        problems.append(f"{site.where}: scaleAndConcurrency.alwaysReady must keep ≥ 1 'http' instance "
                        f"(a literal ≥ 1 or a param with @minValue ≥ 1)")
    main = templates.get("main.bicep")
    if main is not None and dig(main.tree, "parameters", "httpAlwaysReady") is not None \
            and (_int_floor(main, "httpAlwaysReady") or 0) < 1:
        problems.append("main.bicep: param httpAlwaysReady must have @minValue ≥ 1")
    plans = of_type(templates, "Microsoft.Web/serverfarms")
    if len(plans) != 1 or dig(plans[0].body, "sku", "name") != "FC1" \
            or dig(plans[0].body, "sku", "tier") != "FlexConsumption":
        problems.append("exactly one plan, sku FC1 / FlexConsumption")
    policies = {r.body.get("name"): dig(r.body, "properties", "allow")
                for r in of_type(templates, "Microsoft.Web/sites/basicPublishingCredentialsPolicies")}
    for kind in ("ftp", "scm"):
        if policies.get(kind) is not False:
            problems.append(f"basic-auth publishing credentials ({kind}) must be disallowed")
    return problems


# --- App Service Authentication and the API app registration --------------------------------------

#: Paths App Service Authentication lets through without a token: the routes that authenticate
#: themselves (Graph's webhooks: clientState; tickets: HMAC; Event Grid: the extension's system key)
#: and the status-only health. Any other path needs an Entra token for the API app registration.
AUTH_EXCLUDED_PATHS = frozenset({"/api/health", "/api/graph/notifications", "/api/graph/lifecycle", "/api/tickets",
                                 "/api/tickets/*", "/runtime/webhooks/eventgrid"})
#: The app roles the code checks (shared/principal.py), each assignable to users and applications.
API_APP_ROLES = frozenset({"PasskeyGuard.Admin", "PasskeyGuard.Reader"})
_ISSUER = "${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0"


@reports_shape_errors
def check_app_service_auth(infra_dir: Path) -> list[str]:
    """authsettingsV2 on the function app: on, 401 for unauthenticated callers, only the self-authenticating
    paths excluded, the Entra provider validating tokens of this tenant for the API app registration (no
    client secret); that registration defines exactly the two app roles (users and applications, stable
    guid() ids) and its service principal requires role assignment."""
    templates = load_templates(infra_dir)
    problems: list[str] = []
    sites = of_type(templates, "Microsoft.Web/sites")
    auth = [r for r in of_type(templates, "Microsoft.Web/sites/config") if r.body.get("name") == "authsettingsV2"]
    if len(auth) != 1 or len(sites) != 1 or auth[0].body.get("parent") != sites[0].symbol \
            or auth[0].template is not sites[0].template:
        return [f"exactly one authsettingsV2 config whose parent is the function app must be declared, "
                f"found {[a.where for a in auth]}"]
    where, props = auth[0].where, auth[0].body.get("properties") or {}
    if dig(props, "platform", "enabled") is not True:
        problems.append(f"{where}: platform.enabled must be true (App Service Authentication on)")
    validation = props.get("globalValidation") or {}
    if validation.get("requireAuthentication") is not True:
        problems.append(f"{where}: globalValidation.requireAuthentication must be true")
    if validation.get("unauthenticatedClientAction") != "Return401":
        problems.append(f"{where}: globalValidation.unauthenticatedClientAction must be 'Return401' (an API, "
                        f"no login redirect, no anonymous pass-through), is "
                        f"{render(validation.get('unauthenticatedClientAction'))}")
    excluded = validation.get("excludedPaths") or []
    if not all(isinstance(p, str) for p in excluded):
        problems.append(f"{where}: excludedPaths must be literal paths")
    else:
        for path in sorted(set(excluded) - AUTH_EXCLUDED_PATHS):
            problems.append(f"{where}: excludedPaths lets {path} through without a token (only the "
                            f"self-authenticating webhooks and the status-only health may be excluded)")
        for path in sorted(AUTH_EXCLUDED_PATHS - set(excluded)):
            problems.append(f"{where}: excludedPaths lacks {path}: its callers (Graph, the ticketing system, "
                            f"Event Grid, health probes) send no Entra token and would get 401")
    if dig(props, "httpSettings", "requireHttps") is not True:
        problems.append(f"{where}: httpSettings.requireHttps must be true")
    providers = props.get("identityProviders") or {}
    others = sorted(name for name, conf in providers.items()
                    if name != "azureActiveDirectory" and dig(conf, "enabled") is not False)
    if others:
        problems.append(f"{where}: only the Microsoft Entra provider may be configured, found {others}")
    aad = providers.get("azureActiveDirectory") or {}
    registration = aad.get("registration") or {}
    if aad.get("enabled") is not True:
        problems.append(f"{where}: identityProviders.azureActiveDirectory.enabled must be true")
    params = auth[0].template.tree.get("parameters") or {}
    client_id = registration.get("clientId")
    if not (isinstance(client_id, str) and client_id in params):
        problems.append(f"{where}: registration.clientId must be a parameter (the API app registration's "
                        f"appId), is {render(client_id)}")
    if registration.get("openIdIssuer") != _ISSUER:
        problems.append(f"{where}: registration.openIdIssuer must be {_ISSUER} (this tenant's v2.0 issuer), is "
                        f"{render(registration.get('openIdIssuer'))}")
    secret_keys = {"clientSecretSettingName", "clientSecretCertificateThumbprint", "clientSecretCertificateIssuer",
                   "clientSecretCertificateSubjectAlternativeName"}
    if secret_keys & set(registration):
        problems.append(f"{where}: registration must carry no client secret or certificate "
                        f"({sorted(secret_keys & set(registration))}): validating tokens needs none")
    audiences = dig(aad, "validation", "allowedAudiences") or []
    if client_id not in audiences:
        problems.append(f"{where}: validation.allowedAudiences must include the API's client id "
                        f"({render(client_id)}), is {render(audiences)}")
    if dig(props, "login", "tokenStore", "enabled") is True:
        problems.append(f"{where}: the token store must stay off (an API validates bearer tokens, it keeps none)")
    problems += _check_api_app(templates, client_id if isinstance(client_id, str) else None, auth[0].template)
    return problems


def _check_api_app(templates: Mapping[str, Template], client_param: str | None, site_template: Template) -> list[str]:
    """The app registration and service principal behind the API, and main.bicep wiring its appId
    into the function app's authentication."""
    problems: list[str] = []
    apps = of_type(templates, "Microsoft.Graph/applications")
    if len(apps) != 1:
        return [f"exactly one Microsoft.Graph/applications (the API) must be declared, found {len(apps)}"]
    app = apps[0]
    if "extension microsoftGraphV1" not in app.template.text:
        problems.append(f"{app.template.name} must use `extension microsoftGraphV1`")
    if app.body.get("signInAudience") != "AzureADMyOrg":
        problems.append(f"{app.where}: signInAudience must be 'AzureADMyOrg' (this tenant only)")
    if not app.body.get("uniqueName"):
        problems.append(f"{app.where}: uniqueName is required (redeploys update the same registration)")
    if not app.body.get("identifierUris"):
        problems.append(f"{app.where}: identifierUris must name the API (api://<tenant id>/<name>)")
    roles = [r for r in app.body.get("appRoles") or [] if isinstance(r, dict)]
    values = [r.get("value") for r in roles]
    if sorted(str(v) for v in values) != sorted(API_APP_ROLES):
        problems.append(f"{app.where}: appRoles must be exactly {sorted(API_APP_ROLES)}, are {values}")
    for role in roles:
        label = f"{app.where}: app role {role.get('value')}"
        if sorted(role.get("allowedMemberTypes") or []) != ["Application", "User"]:
            problems.append(f"{label}: allowedMemberTypes must be User and Application, are "
                            f"{render(role.get('allowedMemberTypes'))}")
        if role.get("isEnabled") is not True:
            problems.append(f"{label}: isEnabled must be true")
        if dig(role, "id", "function", "type") != "guid":
            problems.append(f"{label}: id must be guid(<fixed inputs>) so it is stable across deployments, is "
                            f"{render(role.get('id'))}")
        if not role.get("description") or not role.get("displayName"):
            problems.append(f"{label}: needs a displayName and a description (shown when assigning it)")
    sps = [s for s in of_type(templates, "Microsoft.Graph/servicePrincipals") if s.template is app.template]
    if len(sps) != 1 or render(sps[0].body.get("appId")) != f"{app.symbol}.appId":
        problems.append(f"{app.template.name}: exactly one servicePrincipals with appId {app.symbol}.appId")
    elif sps[0].body.get("appRoleAssignmentRequired") is not True:
        problems.append(f"{sps[0].where}: appRoleAssignmentRequired must be true (only assigned callers get tokens)")
    outputs = app.template.tree.get("outputs") or {}
    app_output = next((name for name, o in outputs.items() if render(o.get("value")) == f"{app.symbol}.appId"), None)
    main = templates.get("main.bicep")
    modules = (main.tree.get("modules") or {}) if main else {}
    api_module = next((sym for sym, m in modules.items() if dig(m, "detail", "path") == app.template.name), None)
    site_module = next((m for m in modules.values() if dig(m, "detail", "path") == site_template.name), None)
    wired = dig(site_module, "config", "params", client_param) if site_module and client_param else None
    if not (app_output and api_module and render(wired) == f"{api_module}.outputs.{app_output}"):
        problems.append(f"main.bicep must pass the API app registration's appId (<{app.template.name} module>"
                        f".outputs.<appId output>) as {site_template.name}'s {client_param}, passes {render(wired)}")
    return problems


# --- app settings --------------------------------------------------------------------------------

def app_settings_values(infra_dir: Path) -> dict[str, Any]:
    """The app settings the templates write, name → pycep value expression.

    Read from the `Microsoft.Web/sites/config` 'appsettings' resource and from any
    siteConfig.appSettings list. If pycep cannot express a settings object (e.g. a union()),
    falls back to the `NAME:` keys in the raw text of that resource.
    """
    templates = load_templates(infra_dir)
    settings: dict[str, Any] = {}
    for config in of_type(templates, "Microsoft.Web/sites/config"):
        if config.body.get("name") != "appsettings":
            continue
        props = config.body.get("properties")
        if isinstance(props, dict) and "function" not in props and "operator" not in props:
            settings.update(props)
        else:
            block = _resource_block(config.template, config.symbol)
            start = re.search(r"(?m)^( *)properties\s*:", block)
            if start:  # keys indented deeper than `properties:`, up to the block's end
                depth = len(start.group(1))
                for indent, key in re.findall(r"(?m)^( +)'?([A-Za-z_][A-Za-z0-9_]*)'?\s*:", block[start.end():]):
                    if len(indent) > depth:
                        settings.setdefault(key, None)
    for site in of_type(templates, "Microsoft.Web/sites"):
        for entry in dig(site.body, "properties", "siteConfig", "appSettings") or []:
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                settings[entry["name"]] = entry.get("value")
    return settings


@reports_shape_errors
def check_settings_in_step(infra_dir: Path, app_settings: Iterable[str], local_only: Iterable[str],
                           host_settings: Mapping[str, str] = HOST_SETTINGS, *,
                           platform: Iterable[str] = ()) -> list[str]:
    """The templates write every setting the code reads (minus local-only ones) and nothing else
    except the host's own allow-listed settings; never a platform setting (App Service sets those)."""
    written = set(app_settings_values(infra_dir))
    if not written:
        return ["the templates write no app settings (no 'appsettings' config resource found)"]
    needed = set(app_settings) - set(local_only)
    problems = [f"the code reads {name} but the templates do not set it" for name in sorted(needed - written)]
    problems += [f"the templates set {name}, which the code does not read (and it is not a host setting)"
                 for name in sorted(written - needed - set(host_settings))]
    problems += [f"the templates set local-only setting {name}" for name in sorted(written & set(local_only))]
    problems += [f"the templates set platform setting {name}: App Service sets it itself, and writing it "
                 f"would fake the platform's report" for name in sorted(written & set(platform))]
    return problems


def binding_expression_problems(function_app: Path, app_settings: Iterable[str]) -> list[str]:
    """Every %NAME% binding expression in function_app.py names a setting in APP_SETTINGS."""
    names = set(re.findall(r"%([A-Za-z_][A-Za-z0-9_]*)%", function_app.read_text(encoding="utf-8")))
    return [f"function_app.py uses %{name}% but shared.config.APP_SETTINGS does not list it"
            for name in sorted(names - set(app_settings))]


# --- parameters ----------------------------------------------------------------------------------

@reports_shape_errors
def check_parameters(infra_dir: Path) -> list[str]:
    """Every param has a @description and bounds (strings: length or allowed; ints: min and max)."""
    problems = []
    for template in load_templates(infra_dir).values():
        for name, param in (template.tree.get("parameters") or {}).items():
            decos = decorators(param)
            where = f"{template.name}: param {name}"
            if not decos.get("description"):
                problems.append(f"{where} has no @description")
            ptype = param.get("type")
            if ptype == "string" and not ({"allowed", "min_length", "max_length"} & set(decos)):
                problems.append(f"{where} is an unbounded string (@minLength/@maxLength or @allowed)")
            if ptype == "int" and "allowed" not in decos and not {"min_value", "max_value"} <= set(decos):
                problems.append(f"{where} is an unbounded int (@minValue and @maxValue, or @allowed)")
    return problems


@reports_shape_errors
def check_schedules(infra_dir: Path) -> list[str]:
    """Schedule defaults are 6-field NCRONTAB (with seconds), and azd's defaults match Bicep's."""
    templates = load_templates(infra_dir)
    params = templates["main.bicep"].tree.get("parameters") or {}
    problems = []
    for name in ("policySchedule", "sweepSchedule", "trackerSchedule", "subscriptionSchedule"):
        default = dig(params, name, "default")
        fields = default.split() if isinstance(default, str) else []
        if len(fields) != 6 or not all(_NCRONTAB_FIELD.match(f) for f in fields):
            problems.append(f"main.bicep: {name} default {default!r} is not a 6-field NCRONTAB expression")
    params_file = infra_dir / "main.parameters.json"
    entries = json.loads(params_file.read_text(encoding="utf-8")).get("parameters", {})
    for name, entry in entries.items():
        match = re.fullmatch(r"\$\{[A-Z0-9_]+=(.*)\}", str(entry.get("value")))
        if name not in params:
            problems.append(f"main.parameters.json sets {name}, which main.bicep does not declare")
        elif match and params[name].get("default") is not None:
            default = params[name]["default"]
            shown = ("true" if default else "false") if isinstance(default, bool) else str(default)
            if match.group(1) != shown:
                problems.append(f"main.parameters.json: azd default of {name} ({match.group(1)!r}) differs from "
                                f"main.bicep's ({shown!r})")
    return problems


# --- Graph permissions ---------------------------------------------------------------------------

def load_graph_permissions(infra_dir: Path) -> dict[str, Any]:
    """infra/graph-permissions.json: the documented Graph application permissions."""
    return json.loads((infra_dir / GRAPH_PERMISSIONS_FILE).read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def documented_graph_roles(infra_dir: Path, enforcement_mode: str, remove_stale_passkeys: bool,
                           grant_application_read: bool = False) -> set[str]:
    """The roles the documented rule selects for one configuration (the rule docs/deployment.md states)."""
    active = {"always", enforcement_mode, "removeStalePasskeys" if remove_stale_passkeys else "keepStalePasskeys",
              *(["readApplications"] if grant_application_read else [])}
    return {entry["role"] for entry in load_graph_permissions(infra_dir)["roles"] if entry["when"] in active}


def _syntax_tree(source: str) -> Any:
    """tree-sitter-bicep root node of `source` (extension lines blanked; it rejects them)."""
    import tree_sitter_bicep
    from tree_sitter import Language, Parser

    source = re.sub(r"(?m)^extension .*$", lambda m: " " * len(m.group(0)), source)
    return Parser(Language(tree_sitter_bicep.language())).parse(source.encode()).root_node


def _variable_node(source: str, name: str) -> Any:
    """The value node of `var <name> = <value>` (tree-sitter), or None."""
    for declaration in _syntax_tree(source).children:
        if declaration.type != "variable_declaration":
            continue
        named = [c for c in declaration.children if c.is_named]
        if len(named) == 2 and named[0].type == "identifier" and named[0].text.decode() == name:
            return named[1]
    return None


def _evaluate(node: Any, env: Mapping[str, Any]) -> Any:
    """Evaluate the small expression language the Graph role selection may use: string and bool
    literals, arrays, parameters, `c ? a : b`, `==`, `!=`, `!`, parentheses. tree-sitter tells
    identifiers from strings (pycep does not). Anything else raises BicepShapeError."""
    named = [c for c in node.children if c.is_named]
    if node.type == "string":
        if any(c.type != "string_content" for c in named):
            raise BicepShapeError(f"cannot evaluate interpolated string {node.text.decode()!r} offline")
        return "".join(c.text.decode() for c in named)
    if node.type == "boolean":
        return node.text.decode() == "true"
    if node.type == "identifier":
        name = node.text.decode()
        if name not in env:
            raise BicepShapeError(f"{name} is not a parameter the evaluation knows")
        return env[name]
    if node.type == "array":
        return [_evaluate(c, env) for c in named]
    if node.type == "parenthesized_expression" and len(named) == 1:
        return _evaluate(named[0], env)
    if node.type == "ternary_expression" and len(named) == 3:
        return _evaluate(named[1] if _evaluate(named[0], env) else named[2], env)
    if node.type == "unary_expression" and node.children[0].type == "!" and len(named) == 1:
        return not _evaluate(named[0], env)
    if node.type == "binary_expression" and len(named) == 2:
        operator = [c.type for c in node.children if not c.is_named]
        left, right = _evaluate(named[0], env), _evaluate(named[1], env)
        if operator == ["=="]:
            return left == right
        if operator == ["!="]:
            return left != right
    raise BicepShapeError(f"cannot evaluate {node.type} {node.text.decode()[:60]!r} offline")


def _graph_chain(infra_dir: Path) -> tuple[list[str], dict[str, Any] | None]:
    """Follow the grant from the appRoleAssignedTo loop back to main.bicep's selection of
    graph-permissions.json. Returns (problems, selection) where selection holds what evaluation needs."""
    templates = load_templates(infra_dir)
    problems: list[str] = []
    grants = of_type(templates, "Microsoft.Graph/appRoleAssignedTo")
    if len(grants) != 1:
        return [f"exactly one Microsoft.Graph/appRoleAssignedTo declaration (a loop over the documented "
                f"roles) must exist, found {len(grants)}: {[g.where for g in grants]}"], None
    grant = grants[0]
    module_template = grant.template
    loop_param = dig(grant.loop, "detail", "array_name")
    item = dig(grant.loop, "detail", "item_name")
    if not loop_param or loop_param not in (module_template.tree.get("parameters") or {}):
        return [f"{grant.where} must loop over a parameter of {module_template.name}"], None
    if "extension microsoftGraphV1" not in module_template.text:
        problems.append(f"{module_template.name} must use `extension microsoftGraphV1` (the bicepconfig.json alias)")
    sp_symbol = _symbol_of(dig(grant.body, "resourceId", "operator", "operands", "operand_1"))
    sps = {r.symbol: r for r in of_type(templates, "Microsoft.Graph/servicePrincipals", existing=True)
           if r.template is module_template}
    if sp_symbol not in sps or sps[sp_symbol].body.get("appId") != GRAPH_APP_ID:
        problems.append(f"{grant.where}: resourceId must be the id of the existing Microsoft Graph service "
                        f"principal (appId {GRAPH_APP_ID})")
    block = _resource_block(module_template, grant.symbol)
    lookup = re.search(rf"appRoleId:\s*\(?filter\(\s*{re.escape(str(sp_symbol))}\.appRoles,\s*(\w+)\s*=>\s*"
                       rf"\1\.value\s*==\s*{re.escape(str(item))}\s*\)\[0\]\)?\.id\s*$", block, re.M)
    if not lookup:
        problems.append(f"{grant.where}: appRoleId must be filter({sp_symbol}.appRoles, r => r.value == {item})[0].id")
    if set(_GUID.findall(module_template.text)) - {GRAPH_APP_ID}:
        problems.append(f"{module_template.name}: no app-role GUID may be hard-coded (roles resolve by value)")
    main = templates.get("main.bicep")
    modules = [(sym, m) for sym, m in ((main.tree.get("modules") or {}).items() if main else [])
               if dig(m, "detail", "path") == module_template.name]
    if len(modules) != 1:
        return [*problems, f"main.bicep must deploy {module_template.name} exactly once"], None
    assert main is not None
    roles_var = dig(modules[0][1], "config", "params", loop_param)
    variables = main.tree.get("variables") or {}
    if not isinstance(roles_var, str) or roles_var not in variables:
        return [*problems, f"main.bicep must pass a variable as {module_template.name}'s {loop_param}, "
                           f"passes {render(roles_var)}"], None
    selection = variables[roles_var]["value"]
    shape = re.fullmatch(r"map\(filter\((\w+)\.roles, (\w+) => contains\((\w+), \2\.when\)\), (\w+) => \4\.role\)",
                         render(selection))
    if not shape:
        return [*problems, f"main.bicep: {roles_var} must be map(filter(<permissions>.roles, p => "
                           f"contains(<conditions>, p.when)), p => p.role); is {render(selection)}"], None
    source_var, conditions_var = shape.group(1), shape.group(3)
    source = dig(variables, source_var, "value", "function")
    if not source or source.get("type") != "load_json_content" or \
            dig(source, "parameters", "file_path") != GRAPH_PERMISSIONS_FILE:
        problems.append(f"main.bicep: {source_var} must be loadJsonContent('{GRAPH_PERMISSIONS_FILE}')")
    if conditions_var not in variables:
        return [*problems, f"main.bicep: {conditions_var} is not a variable"], None
    params = main.tree.get("parameters") or {}
    if dig(params, "removeStalePasskeys", "type") != "bool" or dig(params, "grantApplicationRead", "type") != "bool" \
            or sorted(decorators(params.get("enforcementMode") or {}).get("allowed") or []) != ["audit", "enforce"]:
        problems.append("main.bicep must declare enforcementMode (@allowed audit, enforce), "
                        "removeStalePasskeys (bool) and grantApplicationRead (bool)")
    return problems, {"source": main.text, "conditions": conditions_var}


def granted_graph_roles(infra_dir: Path, enforcement_mode: str, remove_stale_passkeys: bool,
                        grant_application_read: bool = False) -> set[str]:
    """The Graph roles the templates grant for one configuration, found by following the Bicep chain
    (appRoleAssignedTo loop → module param → main.bicep selection) and evaluating the selection."""
    problems, selection = _graph_chain(infra_dir)
    if selection is None:
        raise BicepShapeError("; ".join(problems))
    env = {"enforcementMode": enforcement_mode, "removeStalePasskeys": remove_stale_passkeys,
           "grantApplicationRead": grant_application_read}
    node = _variable_node(selection["source"], selection["conditions"])
    if node is None:
        raise BicepShapeError(f"main.bicep: var {selection['conditions']} not found")
    active = _evaluate(node, env)
    if not isinstance(active, list):
        raise BicepShapeError(f"the active Graph conditions must be an array, are {render(active)}")
    return {entry["role"] for entry in load_graph_permissions(infra_dir)["roles"] if entry["when"] in active}


GRAPH_CONFIGURATIONS = [(mode, remove, apps) for mode in ("audit", "enforce") for remove in (False, True)
                        for apps in (False, True)]


@reports_shape_errors
def check_graph_permissions(infra_dir: Path) -> list[str]:
    """The granted Graph roles equal the documented list exactly, for every configuration; the list
    is well-formed; no role is granted outside it."""
    problems, _ = _graph_chain(infra_dir)
    try:
        doc = load_graph_permissions(infra_dir)
    except (OSError, ValueError) as exc:
        return [*problems, f"{GRAPH_PERMISSIONS_FILE} is unreadable: {exc}"]
    if doc.get("resourceAppId") != GRAPH_APP_ID:
        problems.append(f"{GRAPH_PERMISSIONS_FILE}: resourceAppId must be {GRAPH_APP_ID}")
    roles = [entry.get("role") for entry in doc.get("roles", [])]
    if len(roles) != len(set(roles)):
        problems.append(f"{GRAPH_PERMISSIONS_FILE}: a role is listed twice")
    for entry in doc.get("roles", []):
        for key in ("role", "when", "feature", "reason"):
            if not str(entry.get(key) or "").strip():
                problems.append(f"{GRAPH_PERMISSIONS_FILE}: {entry.get('role')} has no {key}")
        if entry.get("when") not in GRAPH_CONDITIONS:
            problems.append(f"{GRAPH_PERMISSIONS_FILE}: {entry.get('role')} has unknown when {entry.get('when')!r}")
    for template in load_templates(infra_dir).values():
        for literal in _GRAPH_ROLE_LITERAL.findall(template.text):
            problems.append(f"{template.name}: Graph permission literal {literal}: roles come only from "
                            f"{GRAPH_PERMISSIONS_FILE}")
    if problems:
        return problems
    for mode, remove, apps in GRAPH_CONFIGURATIONS:
        try:
            granted = granted_graph_roles(infra_dir, mode, remove, apps)
        except (BicepShapeError, KeyError) as exc:
            return [f"cannot evaluate the granted Graph roles: {exc}"]
        documented = documented_graph_roles(infra_dir, mode, remove, apps)
        if granted != documented:
            problems.append(f"enforcementMode={mode}, removeStalePasskeys={remove}, grantApplicationRead={apps}: "
                            f"granted {sorted(granted)} but documented {sorted(documented)}")
    return problems


def docs_graph_table(markdown: str) -> list[tuple[str, str, str, str]]:
    """(role, when, feature, reason) rows of the table between the graph-permissions markers."""
    match = re.search(r"<!-- graph-permissions:begin -->(.*?)<!-- graph-permissions:end -->", markdown, re.S)
    if not match:
        return []
    rows = []
    for line in match.group(1).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`") and cells[1].startswith("`"):
            rows.append((cells[0].strip("`"), cells[1].strip("`"), cells[2], cells[3]))
    return rows


def check_docs_graph_table(infra_dir: Path, deployment_md: Path) -> list[str]:
    """docs/deployment.md shows exactly the entries of graph-permissions.json (role, when, feature, reason)."""
    if not deployment_md.is_file():
        return [f"{deployment_md} is missing"]
    rows = set(docs_graph_table(deployment_md.read_text(encoding="utf-8")))
    documented = {(e["role"], e["when"], e["feature"], e["reason"]) for e in load_graph_permissions(infra_dir)["roles"]}
    problems = [f"docs/deployment.md lacks (or differs on) {row[0]} ({row[1]})" for row in sorted(documented - rows)]
    problems += [f"docs/deployment.md lists {row[0]} ({row[1]}), which {GRAPH_PERMISSIONS_FILE} does not"
                 for row in sorted(rows - documented)]
    return problems


# --- checkov configuration -----------------------------------------------------------------------

def checkov_skips(config_file: Path) -> dict[str, str]:
    """skip-check entries of infra/.checkov.yaml: check id → the reason written after '#'."""
    skips: dict[str, str] = {}
    in_skips = False
    for line in config_file.read_text(encoding="utf-8").splitlines():
        if re.match(r"^[A-Za-z-]+:", line):
            in_skips = line.startswith("skip-check:")
            continue
        match = re.match(r"^\s+-\s+([A-Z0-9_]+)\s*(?:#\s*(.*))?$", line)
        if in_skips and match:
            skips[match.group(1)] = (match.group(2) or "").strip()
    return skips


def check_checkov_skips(config_file: Path) -> list[str]:
    """Every skipped checkov check has a reason of a few words."""
    skips = checkov_skips(config_file)
    problems = [] if skips else [f"{config_file.name} lists no skip-check entries (or cannot be read)"]
    return problems + [f"{config_file.name}: skip {check} has no reason" for check, reason in skips.items()
                       if len(reason.split()) < 4]
