"""Run a plan against a host backend; undo every step that started when one fails.

The executor is deliberately thin: it knows nothing about VFs or OVS, only
that each step's ``do`` and ``undo`` name an operation of the backend, and
which earlier steps a step needs (:meth:`Plan.needs`). Steps whose needs are
met run at the same time: a plug's kernel work then overlaps its OVSDB
transaction instead of waiting for it.

Where steps run: a step the backend can *begin* (``STARTABLE``, ``begin``)
does its work on a thread that is not ours (an OVSDB transaction runs on
the ovsdbapp connection's thread, which also waits for ovs-vswitchd), so it
is begun first, from the calling thread, and waited for beside the rest. Of
the other steps that may start together, the ones every later step waits
for run on the calling thread too; the rest go to a small thread pool. A
passthrough or forwarder plug thus uses no pool thread at all: its
transaction is handed to the connection thread, and its VF work runs on
the caller's meanwhile.

Progress is reported *before* steps start (write-ahead): a journal holding
``n`` means that steps ``[0, n)`` may have run and no later one has. Every
undo is safe on a step that did not run, so undoing all ``n`` is always
correct after a crash.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, Protocol

from smartnic_vif.decisions.plan import Operation, Plan, Step
from smartnic_vif.model.errors import NotFound, PlanStepFailed

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


class Started(Protocol):
    """An operation whose work runs on a thread that is not the executor's
    (see ``backend.begin``): ``done`` completes when that work is over, and
    ``wait()`` then returns, or raises what the operation failed with. Past
    ``deadline`` (``time.monotonic()``) ``wait()`` returns or raises soon
    whether or not ``done`` ever completes."""

    done: futures.Future[None]
    deadline: float

    def wait(self) -> None: ...


def _startable(backend: Any) -> frozenset[str]:
    """The operations ``backend.begin`` starts without a thread of ours."""
    startable: frozenset[str] = getattr(backend, "STARTABLE", frozenset())
    return startable


def _groupable(backend: Any) -> frozenset[str]:
    """The operations ``backend.call_group`` takes together (none if it has no
    such method)."""
    groupable: frozenset[str] = getattr(backend, "GROUPABLE", frozenset())
    return groupable


def _units(
    plan: Plan, ready: list[int], pending: list[int], done: set[int],
    groupable: frozenset[str],
) -> list[list[int]]:
    """How to start the ready steps, as units that each run on one thread.

    The backend's groupable ready steps go together in one unit (one call),
    joined by pending groupable steps that need nothing but those and done
    steps (run after them, in index order) when that delays no step waiting
    for the call; every other ready step starts a unit of its own. A unit
    then carries on with a pending step that needs
    only the unit and done steps, when every other pending step that needs
    the unit needs that step too: it starts the moment its needs are met,
    and no step that could start earlier waits for the unit to report."""
    group = [i for i in ready if plan.steps[i].do.name in groupable]
    if group:
        members = set(group)
        for j in pending:
            if (j not in members and plan.steps[j].do.name in groupable
                    and plan.needs(j) <= done | members
                    and _delays_nobody(plan, j, members, pending)):
                group.append(j)
                members.add(j)
        group.sort()
    units = ([group] if group else []) + [[i] for i in ready if i not in group]
    left = [j for j in pending if not any(j in unit for unit in units)]
    for unit in units:
        while True:
            members = set(unit)
            waiting = [j for j in left if plan.needs(j) & members]
            # The next step of the chain: one that may start once the unit
            # ends and that every other step waiting for the unit needs too.
            follower = next((j for j in waiting if plan.needs(j) <= done | members
                             and all(_requires(plan, k, j) for k in waiting if k != j)), None)
            if follower is None:
                break
            unit.append(follower)
            left.remove(follower)
    return units


def _delays_nobody(plan: Plan, step: int, members: set[int], pending: list[int]) -> bool:
    """Whether ``step`` may join the call of ``members``: every other pending
    step that waits for the call needs ``step`` as well (a plug's OVS port,
    waiting for the representor, does not wait for the VF's changes too)."""
    return all(_requires(plan, k, step) for k in pending
               if k != step and k not in members and plan.needs(k) & members)


def _requires(plan: Plan, step: int, other: int) -> bool:
    """Whether ``step`` needs ``other``, directly or through other steps."""
    seen: set[int] = set()
    todo = list(plan.needs(step))
    while todo:
        i = todo.pop()
        if i == other:
            return True
        if i not in seen:
            seen.add(i)
            todo.extend(plan.needs(i))
    return False


def _all_wait_for(plan: Plan, unit: list[int], pending: list[int]) -> bool:
    """Whether every pending step needs ``unit`` (directly or through
    another pending step)."""
    blocked = set(unit)
    for j in sorted(pending):
        if plan.needs(j) & blocked:
            blocked.add(j)
    return all(j in blocked for j in pending)


def _runs(ops: list[Any], name: Callable[[Any], str], groupable: frozenset[str]
          ) -> Iterator[tuple[bool, list[Any]]]:
    """``ops`` in order, neighbouring groupable ones together:
    (groupable, run) pairs."""
    for grouped, run in itertools.groupby(ops, lambda op: name(op) in groupable):
        yield grouped, list(run)


Outcome = tuple[int, Exception | None]


def _run_unit(backend: Any, plan: Plan, unit: list[int]) -> tuple[list[Outcome], list[int]]:
    """Run one unit in order, neighbouring groupable steps in one call.

    Returns (step, error or None) for each step that ran, and every step
    that started: those, plus the members of a failed call that did not
    run (they went out with it). A failure ends the unit."""
    outcomes: list[Outcome] = []
    started: list[int] = []
    for grouped, run in _runs(unit, lambda i: plan.steps[i].do.name, _groupable(backend)):
        if not grouped:
            for i in run:
                started.append(i)
                try:
                    call(backend, plan.steps[i].do)
                except Exception as e:
                    return [*outcomes, (i, e)], started
                outcomes.append((i, None))
            continue
        started += run
        try:
            errors = backend.call_group([plan.steps[i].do for i in run])
        except Exception as e:  # the round trip itself failed: any member may have run
            return [*outcomes, (run[0], e)], started
        outcomes += zip(run, errors, strict=False)
        if len(errors) < len(run) or any(e is not None for e in errors):
            return outcomes, started
    return outcomes, started


def first_horizon(plan: Plan, backend: Any) -> int:
    """What :func:`execute` journals before its first steps start, for a
    caller that records it with its own first write (a plug's claim)."""
    pending = list(range(len(plan.steps)))
    ready = [i for i in pending if not plan.needs(i)]
    units = _units(plan, ready, pending, set(), _groupable(backend)) if ready else []
    return plan.journal_horizon(i for unit in units for i in unit)


def execute(
    plan: Plan,
    backend: Any,
    on_progress: Callable[[int], None] | None = None,
    on_done: Callable[[int], None] | None = None,
    started: int = 0,
) -> None:
    """Run every step of ``plan``, each once the steps it needs are done.

    ``on_progress(n)`` is called before a step starts with ``n`` =
    :meth:`Plan.journal_horizon` of the steps begun so far (those that may
    start next included), unless ``started`` (what the caller journalled
    already) covers it; ``on_done(k)`` after each step with the number of
    steps done. On failure no further step starts; once the running ones
    end, every step that *started* is undone, last first: the failed one
    too (it may have changed the host before failing, as a driver bind
    unbinds the old driver first), and every member of a privileged call
    that carried it (every undo is safe on a step that did not run).
    :class:`PlanStepFailed` names the first step that failed, the undos
    that failed and, as warnings, the undos that found nothing to undo.

    A backend with ``GROUPABLE`` operations and ``call_group`` gets those
    steps in one call when they may start together (or one after the
    other, nothing else between them). One with ``STARTABLE`` operations
    and ``begin(op)`` (returning a :class:`Started`) has those begun from
    this thread before anything else of the same wave starts; a step that
    fails to begin lets nothing else of its wave start.
    """
    groupable = _groupable(backend)
    startable = _startable(backend)
    done: set[int] = set()
    # Every step whose ``do`` started (done, failed or cut short); a step
    # refused before anything was sent (begin raised) did not.
    attempted: set[int] = set()
    pending = list(range(len(plan.steps)))
    running: dict[futures.Future[Any], list[int]] = {}
    # Operations begun on this thread whose work runs elsewhere, by the
    # future that says when it is over.
    begun_here: dict[futures.Future[Any], Started] = {}
    failed: tuple[int, BaseException] | None = None

    def finished(outcomes: list[Outcome], started: list[int] | None = None) -> None:
        nonlocal failed
        attempted.update(started or ())
        for i, error in outcomes:
            if error is None:
                done.add(i)
                if on_done:
                    on_done(len(done))
            else:
                LOG.warning("%s %s: step '%s' failed: %s", plan.action, plan.port_id,
                            plan.steps[i].title, error)
                failed = failed or (i, error)

    def begin(unit: list[int]) -> None:
        try:
            handle = backend.begin(plan.steps[unit[0]].do)
        except Exception as e:
            # Refused before anything was sent: this step did not start.
            finished([(unit[0], e)])
            return
        attempted.add(unit[0])
        running[handle.done] = unit
        begun_here[handle.done] = handle

    while True:
        ready = [i for i in pending if plan.needs(i) <= done] if failed is None else []
        if ready:
            units = _units(plan, ready, pending, done, groupable)
            begun = done | {i for unit in [*units, *running.values()] for i in unit}
            horizon = plan.journal_horizon(begun)
            for unit in units:
                for i in unit:
                    pending.remove(i)
            # Steps whose work runs on another thread anyway (an OVSDB
            # transaction, on the connection's) are begun first and from
            # here: no thread of ours waits for them. One the journal covers
            # already is begun even before the journal write this wave needs
            # for its other steps.
            startables = [u for u in units if len(u) == 1
                          and plan.steps[u[0]].do.name in startable]
            for unit in startables:
                units.remove(unit)
            covered = [u for u in startables if u[0] < started]
            for unit in covered:
                if failed is None:
                    begin(unit)
            if failed is None and horizon > started:
                started = horizon
                if on_progress:
                    on_progress(started)
            for unit in startables:
                if failed is None and unit not in covered:
                    begin(unit)
            if failed is not None:
                units = []  # a step failed to begin: start nothing more
            # A unit that every step still to start waits for anyway runs on
            # this thread (a plan of strictly ordered steps never uses
            # another thread; a forwarder plug runs its VF chain here while
            # its begun OVS transaction runs beside it); without one, this
            # thread only schedules, so that no step waits for one it does
            # not need.
            awaited = [u for u in units if _all_wait_for(plan, u, pending)]
            inline = awaited[-1] if awaited else None
            if inline is not None:
                units.remove(inline)
            for unit in units:
                running[_thread_pool().submit(_run_unit, backend, plan, unit)] = unit
            if inline is not None:
                finished(*_run_unit(backend, plan, inline))
                continue  # what it finished may let others start
        if not running:
            break
        # A begun operation whose thread never reports (a connection torn
        # down under it) must not hang the plan: past its deadline its own
        # wait() settles it.
        timeout = (max(0.0, min(h.deadline for h in begun_here.values()) - time.monotonic())
                   if begun_here else None)
        complete, _ = futures.wait(list(running), timeout, futures.FIRST_COMPLETED)
        if not complete:
            now = time.monotonic()
            complete = {f for f, h in begun_here.items() if h.deadline <= now}
        for future in sorted(complete, key=lambda f: running[f][0]):
            unit = running.pop(future)
            handle = begun_here.pop(future, None)
            if handle is None:
                finished(*future.result())
                continue
            try:
                handle.wait()
            except Exception as e:
                finished([(unit[0], e)])
            else:
                finished([(unit[0], None)])
    if failed is None:
        return
    index, error = failed
    undone = undo([plan.steps[i] for i in sorted(attempted)], backend,
                  unsure=[plan.steps[i] for i in attempted - done])
    if on_progress and not undone.errors:
        on_progress(0)
    raise PlanStepFailed(plan.steps[index].title, error, undone.errors,
                         undone.warnings) from error


@dataclass(frozen=True)
class Undone:
    """What :func:`undo` could not do. ``errors``: undos that failed (the
    host may still carry the step's change; a journal must stay so that
    the undo can be finished). ``warnings``: undos that count as done
    although the host may not be as it was: the undo's object no longer
    exists (:class:`NotFound`: a representor, link, VF or port that
    vanished, so there is nothing left to undo), or the undo of a step
    that never completed failed (nothing says that step changed anything;
    its undo was a precaution)."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def undo(steps: tuple[Step, ...] | list[Step], backend: Any,
         unsure: tuple[Step, ...] | list[Step] = ()) -> Undone:
    """Undo ``steps`` last first; keep going past failures. Neighbouring
    undos the backend can group go in one call, still in order. An undo
    that finds nothing to act on (:class:`NotFound`) is a warning, not an
    error, and so is a failed undo of one of ``unsure`` (steps that began
    but never completed); the rest goes on either way."""
    todo = [(s.title, s.undo) for s in reversed(steps) if s.undo is not None]
    precautions = {s.title for s in unsure}
    result = Undone()
    for grouped, run in _runs(todo, lambda t: t[1].name, _groupable(backend)):
        for chunk in ([run] if grouped else [[t] for t in run]):
            outcomes: list[Exception | None]
            try:
                if grouped:
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
                    result.warnings.append(f"{title} (never completed; undo not confirmed):"
                                           f" {error}")
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
