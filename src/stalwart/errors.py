"""One exception hierarchy for Stalwart.

Every error carries a user-facing ``message`` and a suggested ``action`` so that the UI, the
CLI and the logs can tell a person what happened and what to do next.
"""

from __future__ import annotations


class StalwartError(Exception):
    """Base of every error Stalwart raises on purpose."""

    default_action = "Try again; if it keeps happening, contact the operator."

    def __init__(self, message: str, action: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.action = action or self.default_action

    def __str__(self) -> str:
        return f"{self.message} -> {self.action}"


class ConfigError(StalwartError):
    """A setting is missing or invalid; raised at start-up."""

    default_action = "Fix the setting in the environment (see .env.example) and start again."


class DatabaseError(StalwartError):
    """Base for failures of the database layer."""


class DatabaseUnavailableError(DatabaseError):
    """The database cannot be reached or opened."""

    default_action = "Check that the database server is running and the URL is right."


class TransientDatabaseError(DatabaseError):
    """A failure that may succeed when retried (lock, serialization, dropped connection)."""

    def __init__(self, message: str, action: str | None = None, *, kind: str = "busy") -> None:
        super().__init__(message, action)
        #: busy, serialization, deadlock or disconnect
        self.kind = kind


class RetriesExhaustedError(DatabaseError):
    """A transient failure persisted through every retry."""

    default_action = (
        "Your input is kept. Wait a moment and try again; "
        "if the database stays busy, tell the operator."
    )


class StorageFullError(DatabaseError):
    """The disk or filesystem holding the database is full."""

    default_action = "Free disk space on the data volume (or grow it); your input is kept."


class ReadOnlyStorageError(DatabaseError):
    """The database file or its directory cannot be written."""

    default_action = (
        "Make the data directory writable by the app's user (or point "
        "STALWART_DATA_DIR elsewhere); your input is kept."
    )


class NotFoundError(StalwartError):
    """A record asked for does not exist."""

    default_action = "Reload the page; the record may have been deleted."


class ConflictError(StalwartError):
    """A write was based on a stale version of a record."""

    default_action = "Review both versions and choose which to keep."


class MigrationError(DatabaseError):
    """The schema could not be brought to the expected revision."""

    default_action = "Run `app db current` to see the schema state, then `app db migrate`."


class AuditChainError(StalwartError):
    """The audit log's hash chain is broken: a row was edited, removed or inserted."""

    default_action = "Treat the database as tampered with: restore from a verified backup."


class IntegrityViolationError(DatabaseError):
    """A write broke a rule of the data (a duplicate name, a missing reference, a bad value)."""

    default_action = "Change the values named in the message and save again; your input is kept."


class JobError(StalwartError):
    """Base for failures of background jobs."""

    default_action = "Open the Jobs page (or run `app jobs list`) to see the job's state."


class JobNotFoundError(NotFoundError):
    """No job has the id asked for."""

    default_action = "Check the id with `app jobs list` (or on the Jobs page)."


class IllegalTransitionError(JobError):
    """A job was asked to change to a status its current status cannot lead to."""

    default_action = "Reload the job: its status has changed; act on what it shows now."


class JobDefinitionError(JobError):
    """A job names an unknown function or arguments the function does not accept."""

    default_action = "Fix the function reference or the arguments named above and submit again."


class JobCancelled(JobError):
    """Raised inside a job function by its progress reporter once cancel was requested."""

    default_action = "Nothing to do: the job stopped because it was cancelled."


class JobTimeoutError(JobError):
    """A job ran longer than its timeout."""

    default_action = "Retry with smaller parameters, or raise the job's timeout."


class JobBackendUnavailableError(JobError):
    """The job engine's broker (Redis for the rq engine) cannot be reached."""

    default_action = (
        "Check that Redis is running and STALWART_REDIS_URL is right; the job is saved and "
        "will be dispatched once it is reachable."
    )


class AuthError(StalwartError):
    """Base for failures of sign-in, sessions and access control."""

    default_action = "Sign in again; if it keeps failing, ask an administrator."


class InvalidCredentialsError(AuthError):
    """The username or the password is wrong (which one is deliberately not said)."""

    default_action = "Check the username and the password and try again."


class LoginThrottledError(AuthError):
    """Sign-in is paused for this account or this client after too many failures."""

    default_action = "Wait until the time given, then try again (or ask an administrator)."

    def __init__(
        self, message: str, action: str | None = None, *, retry_after_s: float = 0.0
    ) -> None:
        super().__init__(message, action)
        #: seconds until a new attempt is accepted
        self.retry_after_s = retry_after_s


class AccountDisabledError(AuthError):
    """The account exists but is disabled."""

    default_action = "Ask an administrator to enable the account (`app users enable`)."


class AuthenticationRequiredError(AuthError):
    """There is no valid login session: the user has to sign in (again).

    The page and the unsaved input are kept: they belong to the browser, not to the login.
    """

    default_action = "Sign in again; your page and your unsaved input are kept."


class SessionUnknownError(AuthenticationRequiredError):
    """The session token is malformed or names no session (never issued, or pruned)."""


class SessionExpiredError(AuthenticationRequiredError):
    """The login session passed its idle or its absolute timeout."""

    def __init__(self, message: str, action: str | None = None, *, kind: str = "idle") -> None:
        super().__init__(message, action)
        #: idle or absolute
        self.kind = kind


class SessionRevokedError(AuthenticationRequiredError):
    """The login session was ended on the server (logout, sign-out everywhere, admin)."""

    def __init__(self, message: str, action: str | None = None, *, reason: str = "") -> None:
        super().__init__(message, action)
        #: why it was revoked: logout, superseded, disabled, password_reset, revoked
        self.reason = reason


class PermissionDeniedError(AuthError):
    """The signed-in user's role does not grant what was asked for."""

    default_action = "Ask an administrator for a role that allows it; your input is kept."

    def __init__(
        self,
        message: str,
        action: str | None = None,
        *,
        permission: str = "",
        role: str = "",
        granted_by: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message, action)
        #: the permission that was missing
        self.permission = permission
        #: the role the user has
        self.role = role
        #: the roles that have the permission
        self.granted_by = granted_by


class AccountError(StalwartError):
    """Base for refused account administration (bad input, duplicates, last admin)."""

    default_action = "Change the values named in the message and try again."


class InvalidAccountDataError(AccountError):
    """A username, role, e-mail address or password does not meet the rules."""


class UserExistsError(AccountError):
    """A user with this username (or this OIDC identity) exists already."""

    default_action = "Pick another username, or change the existing user instead."


class UserNotFoundError(NotFoundError):
    """No user has the username or id asked for."""

    default_action = "Check the name with `app users list`."


class LastAdminError(AccountError):
    """The change would leave no enabled user who can administer users."""

    default_action = "Give another user an admin role first, then try again."


class InputRejectedError(StalwartError):
    """A value a user typed cannot be stored as it is (too long, not a finite number).

    Nothing is cut or changed behind the user's back: the draft keeps the field's previous
    value, the browser keeps what was typed, and the message names the field and the limit.
    """

    default_action = "Change the value named in the message; the draft keeps its previous value."

    def __init__(
        self, message: str, action: str | None = None, *, field: str = "", reason: str = ""
    ) -> None:
        super().__init__(message, action)
        #: the field (its label or name) whose value was refused
        self.field = field
        #: why, as a code: too_long, not_finite, too_large, type_not_allowed, content_mismatch,
        #: not_utf8, empty
        self.reason = reason


class UploadRejectedError(InputRejectedError):
    """An uploaded file was refused: too large, a type not allowed, or content that is not
    what its extension says (a renamed executable, a "CSV" that is not UTF-8 text)."""

    default_action = (
        "Choose another file (of an allowed type and size); the form's other fields are kept."
    )


class HealthCheckError(StalwartError):
    """A readiness check found a dependency not ready (or did not answer in time)."""

    default_action = "See OPERATIONS.md, Health checks, for what the failing check needs."


class HealthCheckTimeoutError(HealthCheckError):
    """A readiness check did not answer within ``STALWART_HEALTH_CHECK_TIMEOUT_S``."""

    default_action = (
        "The dependency the check names hangs: see OPERATIONS.md, Health checks; the check "
        "is not started again until the hung one returns."
    )


class CacheUnavailableError(HealthCheckError):
    """The cache's Redis does not answer (values are computed uncached meanwhile)."""

    default_action = (
        "Check that Redis is running and STALWART_REDIS_URL is right; until it answers, "
        "every value is computed uncached (slower, not wrong)."
    )
