"""Exceptions that carry what was looked for and what was found."""

from __future__ import annotations


class SmartNICError(Exception):
    """Base class of every error this project raises on purpose."""


class InvalidValue(SmartNICError, ValueError):
    """A field holds a value that is not acceptable; names both."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"invalid {field} {value!r}: {reason}")


class DiscoveryError(SmartNICError, LookupError):
    """Something expected on the host is not there."""


class NotFound(DiscoveryError):
    pass


class NotAVirtualFunction(DiscoveryError):
    pass


class NotSwitchdev(DiscoveryError):
    pass


class RepresentorNotFound(DiscoveryError):
    pass


class HostOperationError(SmartNICError):
    """A change on the host failed."""


class PlanStepFailed(SmartNICError):
    """A plan step failed; every step done before it was undone."""

    def __init__(self, step: str, cause: BaseException, undo_errors: list[str] | None = None):
        self.step = step
        self.cause = cause
        self.undo_errors = undo_errors or []
        msg = f"step '{step}' failed: {cause}"
        if self.undo_errors:
            msg += "; undo also failed for: " + "; ".join(self.undo_errors)
        super().__init__(msg)
