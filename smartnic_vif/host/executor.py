"""Run a plan's phases against a host backend; undo every started step on failure.

The plan says what runs when (:mod:`smartnic_vif.decisions.plan`). Before each
phase the executor journals ``on_progress(n)`` (write-ahead: steps ``[0, n)``
may have started, no later one has; :meth:`Plan.journal_mark`). It then begins
each lane that is one step the backend can begin (``STARTABLE``: an OVSDB
transaction, whose work runs on the connection's thread), runs the first other
lane on the calling thread and the rest on a pool, and waits for all of them.
A lane's neighbouring privileged steps (``GROUPABLE``) go to the backend in one
call (``call_group``). Once a step fails no lane starts another; when the
running ones end, every step that started is undone, last first, the failed
one too (:func:`smartnic_vif.host.undo.undo`, which also undoes the ``n``
journalled steps after a crash: every undo is safe on a step that did not run).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

from smartnic_vif.decisions.plan import Layout, Plan
from smartnic_vif.host.undo import in_calls, send, undo
from smartnic_vif.model.errors import PlanStepFailed

LOG = logging.getLogger(__name__)
_pool: tuple[int, futures.ThreadPoolExecutor] | None = None
_POOL_LOCK = threading.Lock()


def _thread_pool() -> futures.ThreadPoolExecutor:
    """One pool per process (a forked child cannot use its parent's threads)."""
    global _pool
    with _POOL_LOCK:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), futures.ThreadPoolExecutor(8, thread_name_prefix="lane"))
        return _pool[1]


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
                if error is not None:
                    LOG.warning("%s %s: step '%s' failed: %s", self.plan.action,
                                self.plan.port_id, self.plan.steps[i].title, error)
                    self.failed = self.failed or (i, error)
                else:
                    self.done.add(i)
                    if self.on_done:
                        self.on_done(len(self.done))


def _run_lane(backend: Any, run: _Run, lane: tuple[int, ...]) -> None:
    """A lane's steps in order; every member of a call started with it."""
    steps = run.plan.steps
    for chunk in in_calls(lane, lambda i: steps[i].do.name, getattr(backend, "GROUPABLE", ())):
        if run.failed is None:
            errors = send(backend, [steps[i].do for i in chunk])
            run.record(chunk, list(zip(chunk, errors, strict=False)))


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
    for i, handle in begun:  # past its deadline, its wait() settles it anyway
        futures.wait([handle.done], max(0.0, handle.deadline - time.monotonic()))
        try:
            handle.wait()
            run.record([], [(i, None)])
        except Exception as e:
            run.record([], [(i, e)])


def execute(plan: Plan, backend: Any, on_progress: Callable[[int], None] | None = None,
            on_done: Callable[[int], None] | None = None, started: int = 0) -> None:
    """Run ``plan``; ``started``: what the caller journalled already;
    ``on_done(k)`` after each step, k steps done. :class:`PlanStepFailed`
    names the first step that failed and the undos that failed or warned."""
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


