"""Run a plan against a host backend; undo what was done when a step fails.

The executor is deliberately thin: it knows nothing about VFs or OVS, only
that each step's ``do`` and ``undo`` name an operation of the backend, and
which earlier steps a step needs (:meth:`Plan.needs`). Steps whose needs are
met run at the same time: a plug's kernel work then overlaps its OVSDB
transaction instead of waiting for it.

Progress is reported *before* steps start (write-ahead): a journal holding
``n`` means that steps ``[0, n)`` may have run and no later one has. Every
undo is safe on a step that did not run, so undoing all ``n`` is always
correct after a crash.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from concurrent import futures
from typing import Any, Protocol

from smartnic_vif.decisions.plan import Operation, Plan, Step
from smartnic_vif.model.errors import PlanStepFailed

LOG = logging.getLogger(__name__)

# Threads for steps that run beside another one. A plan has a handful of
# steps; a host plugs a few ports at once.
MAX_PARALLEL_STEPS = 8


class Backend(Protocol):
    OPERATIONS: frozenset[str]


def call(backend: Any, op: Operation) -> Any:
    if op.name not in backend.OPERATIONS:
        raise ValueError(f"plan names unknown operation {op.name!r}")
    return getattr(backend, op.name)(**op.args)


_POOL_LOCK = threading.Lock()
_pool: tuple[int, futures.ThreadPoolExecutor] | None = None


def _thread_pool() -> futures.ThreadPoolExecutor:
    """One pool per process (a forked child cannot use its parent's threads)."""
    global _pool
    with _POOL_LOCK:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), futures.ThreadPoolExecutor(
                MAX_PARALLEL_STEPS, thread_name_prefix="smartnic-step"))
        return _pool[1]


def execute(
    plan: Plan,
    backend: Any,
    on_progress: Callable[[int], None] | None = None,
    on_done: Callable[[int], None] | None = None,
    started: int = 0,
) -> None:
    """Run every step of ``plan``, each once the steps it needs are done.

    ``on_progress(n)`` is called before a step starts with ``n`` = one past
    the highest step index started so far, unless ``started`` (steps the
    caller has journalled as started already) covers it; ``on_done(k)``
    after each step with the number of steps done. On failure no further step starts; once
    the running ones end, every step done is undone, last first, and
    :class:`PlanStepFailed` names the first step that failed.
    """
    done: set[int] = set()
    pending = list(range(len(plan.steps)))
    running: dict[futures.Future[Any], int] = {}
    failed: tuple[int, BaseException] | None = None

    def finished(i: int, error: BaseException | None) -> None:
        nonlocal failed
        if error is None:
            done.add(i)
            if on_done:
                on_done(len(done))
        else:
            LOG.warning("%s %s: step '%s' failed: %s", plan.action, plan.port_id,
                        plan.steps[i].title, error)
            failed = failed or (i, error)

    while True:
        ready = [i for i in pending if plan.needs(i) <= done] if failed is None else []
        if ready:
            if ready[-1] + 1 > started:
                started = ready[-1] + 1
                if on_progress:
                    on_progress(started)
            for i in ready:
                pending.remove(i)
            for i in ready[:-1]:
                running[_thread_pool().submit(call, backend, plan.steps[i].do)] = i
            # The last one runs on this thread: a plan of strictly ordered
            # steps never uses another one.
            try:
                call(backend, plan.steps[ready[-1]].do)
            except Exception as e:
                finished(ready[-1], e)
            else:
                finished(ready[-1], None)
            continue  # what it finished may let others start
        if not running:
            break
        complete, _ = futures.wait(list(running), return_when=futures.FIRST_COMPLETED)
        for future in sorted(complete, key=running.__getitem__):
            finished(running.pop(future), future.exception())
    if failed is None:
        return
    index, error = failed
    errors = undo([plan.steps[i] for i in sorted(done)], backend)
    if on_progress and not errors:
        on_progress(0)
    raise PlanStepFailed(plan.steps[index].title, error, errors) from error


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
