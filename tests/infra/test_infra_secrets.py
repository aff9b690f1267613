"""The webhook secrets Bicep writes to Key Vault are long enough for the app (32+ characters), also when azd's
secretOrRandomPassword supplies its 15-character value on the first provision."""
from __future__ import annotations

import bicep_checks as checks

from shared.config import MIN_SECRET_CHARS

SECRETS = ("ticketWebhookSecret", "graphClientState")


def test_the_vault_module_refuses_secrets_the_app_would_refuse() -> None:
    """keyvault.bicep's secret params need 32+ characters, so a short value fails the deployment, not the app."""
    vault = checks.load_templates(checks.INFRA_DIR)["app/keyvault.bicep"]
    for name in SECRETS:
        decos = checks.decorators(vault.tree["parameters"][name])
        assert "secure" in decos and int(decos.get("min_length", 0)) >= MIN_SECRET_CHARS, name


def test_main_pads_a_short_generated_secret_with_a_random_suffix() -> None:
    """azd generates 15 characters on the first provision: main.bicep pads a value under 32 characters with a
    per-deployment random suffix (a later provision reads the padded value back from the vault and keeps it)."""
    main = checks.load_templates(checks.INFRA_DIR)["main.bicep"]
    text = " ".join(main.text.split())
    padding = main.tree["parameters"]["secretPadding"]
    assert "secure" in checks.decorators(padding) and "new_guid" in str(padding.get("default"))
    for name in SECRETS:
        assert (f"{name}: length({name}) >= {MIN_SECRET_CHARS} ? {name} : '${{{name}}}"
                f"${{replace(guid(secretPadding, '{name}'), '-', '')}}'") in text, name
