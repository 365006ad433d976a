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
    """A plan step failed; every step that started, the failed one included,
    was undone. ``undo_errors``: undos that failed; ``undo_warnings``: undos
    that found nothing left to undo (counted as done)."""

    def __init__(self, step: str, cause: BaseException, undo_errors: list[str] | None = None,
                 undo_warnings: list[str] | None = None):
        self.step = step
        self.cause = cause
        self.undo_errors = undo_errors or []
        self.undo_warnings = undo_warnings or []
        msg = f"step '{step}' failed: {str(cause) or type(cause).__name__}"
        if self.undo_errors:
            msg += "; undo also failed for: " + "; ".join(self.undo_errors)
        super().__init__(msg)


class UnsupportedVnicType(SmartNICError, ValueError):
    """A port's ``binding:vnic_type`` is unknown to Neutron, or known but not
    one this project can plug; names the port and the type."""

    def __init__(self, port_id: str | None, vnic_type: object, reason: str) -> None:
        self.port_id = port_id
        self.vnic_type = vnic_type
        self.reason = reason
        who = f"port {port_id}" if port_id else "a port"
        super().__init__(f"{who} has binding:vnic_type {vnic_type!r}: {reason}")


def _address_ranges(reasons: dict[str, str]) -> list[str]:
    # Adjacent entries (in the caller's order, normally ascending PCI address)
    # that share a reason are folded into "first-last" so a host with 64 claimed
    # VFs gives one line, not 64.
    parts: list[str] = []
    run: list[str] = []
    run_reason: str | None = None

    def flush() -> None:
        if run:
            span = run[0] if len(run) == 1 else f"{run[0]}-{run[-1]}"
            parts.append(f"{span}: {run_reason}")

    for address, reason in reasons.items():
        if reason != run_reason:
            flush()
            run = []
            run_reason = reason
        run.append(address)
    flush()
    return parts


class NoSuitableVF(SmartNICError, LookupError):
    """No free VF satisfies a port's request.

    ``reasons`` maps every VF considered (PCI address, ascending) to the first
    constraint that excluded it, so callers and tests read the cause as data.
    """

    def __init__(self, port_id: str | None, wanted: str, reasons: dict[str, str]) -> None:
        self.port_id = port_id
        self.wanted = wanted
        self.reasons = dict(reasons)
        who = f"port {port_id}" if port_id else "the request"
        if self.reasons:
            detail = "; ".join(_address_ranges(self.reasons))
        else:
            detail = "this host has no SR-IOV virtual functions"
        super().__init__(f"no suitable VF for {who} ({wanted}): {detail}")

    def by_reason(self) -> dict[str, list[str]]:
        """The excluded VF addresses grouped by reason."""
        grouped: dict[str, list[str]] = {}
        for address, reason in self.reasons.items():
            grouped.setdefault(reason, []).append(address)
        return grouped
