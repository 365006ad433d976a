"""Run a plan against a host backend; undo every step that started when one fails.

The plan says what runs when (:mod:`smartnic_vif.decisions.plan`): its phases
one after the other, the lanes of a phase at the same time, the steps of a
lane in order. For each phase the executor

1. journals first (write-ahead): ``on_progress(n)``, n being
   :meth:`Plan.journal_mark`. A journal holding ``n`` means that steps
   ``[0, n)`` may have run and no later one has;
2. begins each lane that is one step the backend can *begin* (``STARTABLE``:
   an OVSDB transaction, whose work runs on the connection's thread), then
   runs the first other lane on the calling thread and the rest on a pool;
3. sends a lane's neighbouring privileged steps (``GROUPABLE``) to the
   backend in one call (``call_group``: one round trip).

When a step fails, no lane starts another step. Once the running ones end,
every step that started is undone, last first, the failed one too. Every undo
is safe on a step that did not run, so after a crash undoing all ``n``
journalled steps (:func:`undo`) is correct as well.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

from smartnic_vif.decisions.plan import Layout, Operation, Plan, Step
from smartnic_vif.model.errors import NotFound, PlanStepFailed

LOG = logging.getLogger(__name__)
MAX_PARALLEL_LANES = 8  # a plan has two lanes at most; a host plugs a few ports at once
_POOL_LOCK = threading.Lock()
_pool: tuple[int, futures.ThreadPoolExecutor] | None = None


def call(backend: Any, op: Operation) -> Any:
    if op.name not in backend.OPERATIONS:
        raise ValueError(f"plan names unknown operation {op.name!r}")
    return getattr(backend, op.name)(**op.args)


def _thread_pool() -> futures.ThreadPoolExecutor:
    """One pool per process (a forked child cannot use its parent's threads)."""
    global _pool
    with _POOL_LOCK:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), futures.ThreadPoolExecutor(
                MAX_PARALLEL_LANES, thread_name_prefix="smartnic-lane"))
        return _pool[1]


def _groupable(backend: Any) -> frozenset[str]:
    """The operations ``backend.call_group`` takes together (a privileged round trip)."""
    return frozenset(getattr(backend, "GROUPABLE", ()))


def _runs(items: Sequence[Any], name: Callable[[Any], str], groupable: frozenset[str]
          ) -> Iterator[list[Any]]:
    """``items`` in order: neighbouring groupable ones together, others alone."""
    for grouped, run in itertools.groupby(items, lambda item: name(item) in groupable):
        together = list(run)
        yield from [together] if grouped else [[item] for item in together]


@dataclass
class _Run:
    """One execution of a plan: what started, what is done, what failed first."""

    plan: Plan
    on_done: Callable[[int], None] | None
    started: set[int] = field(default_factory=set)
    done: set[int] = field(default_factory=set)
    failed: tuple[int, Exception] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, started: Sequence[int], outcomes: Sequence[tuple[int, Exception | None]]
               ) -> None:
        with self.lock:
            self.started.update(started)
            for i, error in outcomes:
                if error is None:
                    self.done.add(i)
                    if self.on_done:
                        self.on_done(len(self.done))
                    continue
                LOG.warning("%s %s: step '%s' failed: %s", self.plan.action,
                            self.plan.port_id, self.plan.steps[i].title, error)
                self.failed = self.failed or (i, error)


def _run_lane(backend: Any, run: _Run, lane: tuple[int, ...]) -> None:
    """The lane's steps in order, neighbouring groupable ones in one call. Every
    member of a call started with it; a failure ends the lane."""
    steps, groupable = run.plan.steps, _groupable(backend)
    for chunk in _runs(lane, lambda i: steps[i].do.name, groupable):
        if run.failed is not None:
            return
        errors: list[Exception | None]
        try:
            if steps[chunk[0]].do.name in groupable:
                errors = backend.call_group([steps[i].do for i in chunk])
            else:
                call(backend, steps[chunk[0]].do)
                errors = [None]
        except Exception as e:  # the call itself failed: any member may have run
            errors = [e]
        run.record(chunk, list(zip(chunk, errors, strict=False)))
        if len(errors) < len(chunk) or any(e is not None for e in errors):
            return


def _run_phase(backend: Any, run: _Run, phase: Layout) -> None:
    steps, begun, lanes = run.plan.steps, [], []
    for lane in phase:
        if len(lane) > 1 or steps[lane[0]].do.name not in getattr(backend, "STARTABLE", ()):
            lanes.append(lane)
        elif run.failed is None:
            try:
                begun.append((lane[0], backend.begin(steps[lane[0]].do)))
                run.record(lane, [])
            except Exception as e:  # refused before anything was sent: not started
                run.record([], [(lane[0], e)])
    if lanes and run.failed is None:
        pooled = [_thread_pool().submit(_run_lane, backend, run, lane) for lane in lanes[1:]]
        _run_lane(backend, run, lanes[0])
        for future in pooled:
            future.result()
    for i, handle in begun:
        # Its work runs on a thread that is not ours. Past its deadline, its
        # own wait() settles it even if that thread never reports.
        futures.wait([handle.done], max(0.0, handle.deadline - time.monotonic()))
        try:
            handle.wait()
            run.record([], [(i, None)])
        except Exception as e:
            run.record([], [(i, e)])


def execute(plan: Plan, backend: Any, on_progress: Callable[[int], None] | None = None,
            on_done: Callable[[int], None] | None = None, started: int = 0) -> None:
    """Run ``plan``'s phases in order. ``on_progress(n)`` journals before a
    phase (unless ``started``, what the caller journalled, covers it);
    ``on_done(k)`` follows each step with the number done. On failure,
    :class:`PlanStepFailed` names the first step that failed, the undos
    that failed and, as warnings, those that found nothing to undo."""
    run = _Run(plan, on_done)
    for k, phase in enumerate(plan.phases):
        if plan.journal_mark(k) > started:
            started = plan.journal_mark(k)
            if on_progress:
                on_progress(started)
        _run_phase(backend, run, phase)
        if run.failed is not None:
            break
    if run.failed is None:
        return
    index, error = run.failed
    undone = undo([plan.steps[i] for i in sorted(run.started)], backend,
                  unsure=[plan.steps[i] for i in run.started - run.done])
    if on_progress and not undone.errors:
        on_progress(0)
    raise PlanStepFailed(plan.steps[index].title, error, undone.errors,
                         undone.warnings) from error


@dataclass(frozen=True)
class Undone:
    """What :func:`undo` could not do. ``errors``: undos that failed (the host
    may still carry the step's change; a journal must stay so that the undo
    can be finished). ``warnings``: undos that count as done although the host
    may not be as it was: the undo's object no longer exists (:class:`NotFound`),
    or the undo of a step that never completed failed (its undo was a
    precaution)."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def undo(steps: Sequence[Step], backend: Any, unsure: Sequence[Step] = ()) -> Undone:
    """Undo ``steps`` last first, neighbouring groupable undos in one call,
    keeping going past failures; ``unsure``: steps that began but never
    completed."""
    todo = [(s.title, s.undo) for s in reversed(steps) if s.undo is not None]
    precautions = {s.title for s in unsure}
    result = Undone()
    groupable = _groupable(backend)
    for chunk in _runs(todo, lambda t: t[1].name, groupable):
        outcomes: list[Exception | None]
        try:
            if chunk[0][1].name in groupable:
                outcomes = backend.call_group([op for _, op in chunk], keep_going=True)
            else:
                call(backend, chunk[0][1])
                outcomes = [None]
        except Exception as e:
            outcomes = [e] * len(chunk)
        for (title, _), error in zip(chunk, outcomes, strict=True):
            if isinstance(error, NotFound):
                LOG.warning("undo of '%s': nothing left to undo: %s", title, error)
                result.warnings.append(f"{title}: {error}")
            elif error is not None and title in precautions:
                LOG.warning("undo of '%s', which never completed, failed: %s", title, error)
                result.warnings.append(f"{title} (never completed; undo not confirmed): {error}")
            elif error is not None:
                LOG.error("undo of '%s' failed: %s", title, error)
                result.errors.append(f"{title}: {error}")
    return result


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
