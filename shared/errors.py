"""The exception tree of Passkey Guard.

Adapters catch SDK exceptions and raise these; HTTP triggers map them to status codes and never echo
an SDK message or a stack trace. Timer and queue triggers let them propagate so the host records them.

    PasskeyGuardError                  base; `code` is the stable machine-readable name
    ├── ConfigError                    a setting is missing or malformed (names the setting)
    │   ├── SecretUnavailable          a secret setting is unset, an unresolved Key Vault reference, short or a
    │   │                              placeholder (503: names the setting, never its value)
    │   └── WrongTenant                Graph or the token answers for another tenant than TENANT_ID (names both)
    ├── InputError                     bad input from a caller: document, request body, CLI argument (400)
    │   ├── PayloadTooLarge            a request body over the size limit (413)
    │   └── PlanBlocked *              the plan has errors: fix the document or the tenant first (400)
    ├── AuthError                      wrong signature, clientState, tenant or timestamp (401)
    │   └── Unauthenticated            an admin route without a signed-in Entra principal (401)
    ├── Forbidden                      the principal lacks the app role the route needs (403)
    ├── AuthUnavailable                App Service Authentication is off: principals cannot be trusted (503)
    ├── MissingGraphPermission         the app's Graph token lacks a role a planned write or a report needs (403)
    ├── NotFound                       a plan, run or flag that does not exist (404)
    ├── ConflictError                  a stored plan no longer matches the tenant, or a lease is held (409)
    │   ├── RemovalNotWaiting          an approval names a flag that is not waiting for one (409)
    │   ├── LeaseLost                  another holder took the apply lease; no further write was sent
    │   ├── AcceptanceMismatch         an acceptance names another plan or the wrong number of users
    │   └── AuditModeRefused           a policy write asked of the app while ENFORCEMENT_MODE is audit
    ├── AdhocDocumentRefused           a request document while ALLOW_ADHOC_DOCUMENTS is off (403)
    ├── LockoutRefused                 a plan would lock users out and acceptance was not given (409)
    │   └── EmergencyExclusionRefused  an enforced CA policy excludes no emergency access, not accepted
    ├── GraphError                     Microsoft Graph answered with an error we cannot recover from (502)
    │   ├── DeltaExpired *             Graph no longer knows the delta token: the sweep starts over (502)
    │   ├── GraphThrottled             429 after our retries; `retry_after` seconds when Graph said (503)
    │   ├── GraphUnavailable           Graph did not answer (connection, 5xx after retries) (503)
    │   └── GraphSignInFailed          no token for Graph: the credential could not sign in (503)
    ├── StateError                     Table or Queue storage failed (503)
    │   ├── ConcurrencyError           an ETag no longer matches: somebody else wrote first (409)
    │   ├── StateAuthError *           storage refused our identity (audience, role assignment, key)
    │   └── StateUnavailable *         storage did not answer: worth retrying later
    └── VerificationFailed             the read-back after an apply does not match what was written

A `*` marks a class defined beside the code that raises it rather than here. The status in brackets is the
HTTP status the class answers with; `tests/test_errors.py` keeps this drawing and the classes in step.
"""
from __future__ import annotations


class PasskeyGuardError(Exception):
    """Base of every error Passkey Guard raises on purpose."""

    code = "internalError"
    status = 500

    def __init__(self, message: str, *, detail: object | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def to_body(self) -> dict[str, object]:
        """The JSON error body every HTTP surface returns."""
        error: dict[str, object] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            error["detail"] = self.detail
        return {"error": error}


class ConfigError(PasskeyGuardError):
    code, status = "configError", 500


class SecretUnavailable(ConfigError):
    code, status = "secretUnavailable", 503


class WrongTenant(ConfigError):
    """TENANT_ID names one tenant while Graph (or the token's `tid`) answers for another: a settings problem,
    refused before any read or write so nothing lands in, or is recorded for, the wrong tenant."""

    code = "wrongTenant"


class InputError(PasskeyGuardError):
    code, status = "badRequest", 400


class PayloadTooLarge(InputError):
    code, status = "payloadTooLarge", 413


class AuthError(PasskeyGuardError):
    code, status = "unauthorized", 401


class MissingGraphPermission(PasskeyGuardError):
    code, status = "missingGraphPermission", 403


class Unauthenticated(AuthError):
    code, status = "unauthenticated", 401


class Forbidden(PasskeyGuardError):
    code, status = "forbidden", 403


class AuthUnavailable(PasskeyGuardError):
    code, status = "authUnavailable", 503


class NotFound(PasskeyGuardError):
    code, status = "notFound", 404


class ConflictError(PasskeyGuardError):
    code, status = "conflict", 409


class RemovalNotWaiting(ConflictError):
    code, status = "removalNotWaiting", 409


class LeaseLost(ConflictError):
    code = "leaseLost"


class AcceptanceMismatch(ConflictError):
    code = "acceptanceMismatch"


class AuditModeRefused(ConflictError):
    code = "auditMode"


class AdhocDocumentRefused(PasskeyGuardError):
    code, status = "adhocDocumentsDisabled", 403


class LockoutRefused(PasskeyGuardError):
    code, status = "lockoutNotAccepted", 409


class EmergencyExclusionRefused(LockoutRefused):
    code = "emergencyExclusionNotAccepted"


class GraphError(PasskeyGuardError):
    code, status = "graphError", 502

    def __init__(self, message: str, *, status_code: int | None = None, graph_code: str | None = None,
                 detail: object | None = None) -> None:
        super().__init__(message, detail=detail)
        self.status_code = status_code
        self.graph_code = graph_code


class GraphThrottled(GraphError):
    code, status = "graphThrottled", 503

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.retry_after = retry_after


class GraphUnavailable(GraphError):
    code, status = "graphUnavailable", 503


class GraphSignInFailed(GraphError):
    code, status = "graphSignInFailed", 503


class StateError(PasskeyGuardError):
    code, status = "stateError", 503


class ConcurrencyError(StateError):
    code, status = "concurrency", 409


class VerificationFailed(PasskeyGuardError):
    code, status = "verificationFailed", 500
