"""Run a plan against a host backend; undo what was done when a step fails.

The executor is deliberately thin: it knows nothing about VFs or OVS, only
that each step's ``do`` and ``undo`` name an operation of the backend.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from smartnic_vif.decisions.plan import Operation, Plan, Step
from smartnic_vif.model.errors import PlanStepFailed

LOG = logging.getLogger(__name__)


class Backend(Protocol):
    OPERATIONS: frozenset[str]


def call(backend: Any, op: Operation) -> Any:
    if op.name not in backend.OPERATIONS:
        raise ValueError(f"plan names unknown operation {op.name!r}")
    return getattr(backend, op.name)(**op.args)


def execute(
    plan: Plan,
    backend: Any,
    on_progress: Callable[[int], None] | None = None,
    start: int = 0,
) -> None:
    """Run ``plan.steps[start:]``. On failure, undo every step done (also
    those before ``start``) in reverse, then raise :class:`PlanStepFailed`."""
    done = start
    for step in plan.steps[start:]:
        try:
            call(backend, step.do)
        except Exception as e:
            LOG.warning("%s %s: step '%s' failed: %s", plan.action, plan.port_id, step.title, e)
            errors = undo(plan.steps[:done], backend)
            if on_progress and not errors:
                on_progress(0)
            raise PlanStepFailed(step.title, e, errors) from e
        done += 1
        if on_progress:
            on_progress(done)


def undo(steps: tuple[Step, ...] | list[Step], backend: Any) -> list[str]:
    """Undo ``steps`` last first; keep going past failures and return them."""
    errors = []
    for step in reversed(steps):
        if step.undo is None:
            continue
        try:
            call(backend, step.undo)
        except Exception as e:
            LOG.error("undo of '%s' failed: %s", step.title, e)
            errors.append(f"{step.title}: {e}")
    return errors


def run_best_effort(plan: Plan, backend: Any) -> list[str]:
    """Run every step's ``do``, keeping going past failures (for clean-ups
    whose steps are independent); return the failures."""
    errors = []
    for step in plan.steps:
        try:
            call(backend, step.do)
        except Exception as e:
            LOG.error("'%s' failed: %s", step.title, e)
            errors.append(f"{step.title}: {e}")
    return errors
