"""Calling a host backend with a plan's operations, and undoing steps.

- :func:`call` runs one operation; :func:`send` runs a few in one call
  (neighbouring privileged ones go to the helper together: ``GROUPABLE``,
  ``call_group``), :func:`in_calls` cuts a list into such calls.
- :func:`undo` undoes steps last first, past failures: after a failed plug
  (:mod:`smartnic_vif.host.executor`), for an unplug (the journalled plan),
  after a crash (the journal's started steps; every undo is safe on a step
  that did not run). A step whose object is gone (:class:`NotFound`) counts
  as undone, with a warning.
- :func:`run_best_effort` runs independent clean-ups, past failures.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from smartnic_vif.decisions.plan import Operation, Plan, Step
from smartnic_vif.model.errors import NotFound

LOG = logging.getLogger(__name__)


def call(backend: Any, op: Operation) -> Any:
    """``backend.<op.name>(**op.args)``, for an operation the backend offers."""
    if op.name not in backend.OPERATIONS:
        raise ValueError(f"plan names unknown operation {op.name!r}")
    return getattr(backend, op.name)(**op.args)


def in_calls(items: Sequence[Any], name: Callable[[Any], str], groupable: Collection[str]
          ) -> Iterator[list[Any]]:
    """``items`` in order, as calls: neighbouring groupable ones together."""
    for grouped, run in itertools.groupby(items, lambda item: name(item) in groupable):
        together = list(run)
        yield from [together] if grouped else [[item] for item in together]


def send(backend: Any, ops: list[Operation], keep_going: bool = False
          ) -> list[Exception | None]:
    """One call to the backend: groupable operations together (one round
    trip), any other alone. An outcome per operation that ran."""
    try:
        if ops[0].name in frozenset(getattr(backend, "GROUPABLE", ())):
            outcomes: list[Exception | None] = backend.call_group(ops, keep_going=keep_going)
            return outcomes
        call(backend, ops[0])
        return [None]
    except Exception as e:  # the call itself failed: any operation in it may have run
        return [e] * len(ops)


@dataclass(frozen=True)
class Undone:
    """``errors``: undos that failed (the journal must stay to finish them).
    ``warnings``: undos that count as done: their object is gone
    (:class:`NotFound`), or they undid a step that never completed."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def undo(steps: Sequence[Step], backend: Any, unsure: Sequence[Step] = ()) -> Undone:
    """Undo ``steps`` last first, neighbouring groupable undos in one call,
    keeping going past failures; ``unsure``: steps that never completed."""
    todo = [(s.title, s.undo) for s in reversed(steps) if s.undo is not None]
    result = Undone()
    for chunk in in_calls(todo, lambda t: t[1].name, getattr(backend, "GROUPABLE", ())):
        outcomes = send(backend, [op for _, op in chunk], keep_going=True)
        for (title, _), error in zip(chunk, outcomes, strict=True):
            if isinstance(error, NotFound):
                LOG.warning("undo of '%s': nothing left to undo: %s", title, error)
                result.warnings.append(f"{title}: {error}")
            elif error is not None and any(s.title == title for s in unsure):
                LOG.warning("undo of '%s', which never completed, failed: %s", title, error)
                result.warnings.append(f"{title} (never completed; undo not confirmed): {error}")
            elif error is not None:
                LOG.error("undo of '%s' failed: %s", title, error)
                result.errors.append(f"{title}: {error}")
    return result


def run_best_effort(plan: Plan, backend: Any) -> list[str]:
    """Every step's ``do``, past failures (independent clean-ups); the failures."""
    errors = []
    for step in plan.steps:
        try:
            call(backend, step.do)
        except Exception as e:
            LOG.error("'%s' failed: %s", step.title, e)
            errors.append(f"{step.title}: {e}")
    return errors
