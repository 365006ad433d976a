"""The executor: phases in order, lanes side by side, write-ahead progress and rollback.

A recording backend stands in for the host; steps that must overlap meet at a
barrier (a strictly sequential run would break it), so nothing here depends
on timing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent import futures

import pytest

from smartnic_vif.decisions.plan import Operation, Plan, Step
from smartnic_vif.host import executor, undo
from smartnic_vif.model.errors import PlanStepFailed


class Recorder:
    OPERATIONS = frozenset({"work", "rollback", "meet"})

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, str]] = []
        self.threads: dict[str, int] = {}
        self.progress: list[int] = []
        self.barrier = threading.Barrier(2, timeout=10)
        self.fail: set[str] = set()

    def _log(self, kind: str, name: str) -> None:
        with self.lock:
            self.events.append((kind, name))

    def work(self, name: str) -> None:
        self.threads[name] = threading.get_ident()
        self._log("start", name)
        if name in self.fail:
            self._log("fail", name)
            raise RuntimeError(f"{name} broke")
        self._log("end", name)

    def meet(self, name: str) -> None:
        """Runs only if another step reaches the barrier at the same time."""
        self._log("start", name)
        self.barrier.wait()
        if name in self.fail:
            raise RuntimeError(f"{name} broke")
        self._log("end", name)

    def rollback(self, name: str) -> None:
        self._log("undo", name)

    def ended(self) -> list[str]:
        return [n for k, n in self.events if k == "end"]


def step(name: str, op: str = "work") -> Step:
    return Step(name, Operation(op, {"name": name}), Operation("rollback", {"name": name}))


def plan(*steps: Step) -> Plan:
    """One lane: the steps in order."""
    return Plan("plug", "port-1", "passthrough", tuple(steps))


def phased(*phases: list[list[Step]]) -> Plan:
    return Plan.phased("plug", "port-1", "passthrough", phases)


def run(p: Plan, rec: Recorder) -> None:
    executor.execute(p, rec, on_progress=rec.progress.append)


def test_a_plan_of_one_lane_runs_in_order_on_the_calling_thread() -> None:
    rec = Recorder()
    run(plan(step("a"), step("b"), step("c")), rec)
    assert rec.ended() == ["a", "b", "c"]
    assert set(rec.threads.values()) == {threading.get_ident()}
    # One phase: journalled once, before a starts.
    assert rec.progress == [3]


def test_the_lanes_of_a_phase_run_at_the_same_time() -> None:
    rec = Recorder()
    # Each "meet" step waits at a barrier for the other: run one after the
    # other, the first would time out and fail the plan.
    run(phased([[step("x", op="meet")], [step("y", op="meet")]]), rec)
    assert sorted(rec.ended()) == ["x", "y"]
    # Both were journalled as started before either ran.
    assert rec.progress == [2]


def test_each_lane_goes_at_its_own_pace() -> None:
    rec = Recorder()
    # "long" waits at the barrier for "late", which comes after "short" in
    # the other lane: the lanes do not wait for each other step by step.
    run(phased([[step("short"), step("late", op="meet")], [step("long", op="meet")]]), rec)
    assert sorted(rec.ended()) == ["late", "long", "short"]


def test_the_first_lane_runs_on_the_calling_thread_and_the_others_on_one_thread_each() -> None:
    rec = Recorder()
    run(phased([[step("side")], [step("chain"), step("next")]]), rec)
    assert sorted(rec.ended()) == ["chain", "next", "side"]
    here = threading.get_ident()
    assert rec.threads["chain"] == rec.threads["next"] != here
    assert rec.threads["side"] == here
    # All three were journalled as started before any ran.
    assert rec.progress == [3]


def test_a_phase_starts_once_every_lane_of_the_phase_before_has_ended() -> None:
    rec = Recorder()
    run(phased([[step("vf")], [step("bridge"), step("port")]], [[step("relay")]],
               [[step("hook")]]), rec)
    order = rec.ended()
    assert order.index("vf") < order.index("relay")
    assert order.index("port") < order.index("relay") < order.index("hook")
    assert rec.progress == [3, 4, 5]


def test_progress_is_written_before_the_phase_it_covers_starts() -> None:
    rec = Recorder()
    seen: dict[str, int] = {}

    class Checking(Recorder):
        def work(self, name: str) -> None:
            seen[name] = rec.progress[-1]
            super().work(name)

    checking = Checking()
    executor.execute(phased([[step("a")]], [[step("b")], [step("c")]]), checking,
                     on_progress=rec.progress.append)
    assert seen == {"a": 1, "b": 3, "c": 3}


def test_a_phase_with_nothing_to_undo_needs_no_journal_write_of_its_own() -> None:
    check = Step("check", Operation("work", {"name": "check"}))  # no undo
    rec = Recorder()
    p = phased([[step("a")]], [[step("b")]], [[check]])
    # b's phase is journalled with the check's, which restores nothing.
    assert [p.journal_mark(k) for k in range(3)] == [1, 3, 3]
    run(p, rec)
    assert rec.ended() == ["a", "b", "check"] and rec.progress == [1, 3]
    # With an undo, the last phase has a write of its own.
    assert phased([[step("a")]], [[step("b")]], [[step("c")]]).journal_mark(1) == 2


def test_steps_the_caller_journalled_as_started_are_not_written_again() -> None:
    rec = Recorder()
    p = phased([[step("vf"), step("bind")], [step("port")]], [[step("relay")]])
    first = p.journal_mark(0)
    assert first == 3
    executor.execute(p, rec, on_progress=rec.progress.append, started=first)
    assert sorted(rec.ended()) == ["bind", "port", "relay", "vf"]
    # Only the relay lies beyond what the caller recorded.
    assert rec.progress == [4]


def test_a_failure_undoes_every_started_step_last_first_and_starts_no_more() -> None:
    rec = Recorder()
    rec.fail.add("port")
    p = phased([[step("vf")]], [[step("link"), step("bridge"), step("port"), step("relay")]])
    with pytest.raises(PlanStepFailed) as caught:
        run(p, rec)
    assert caught.value.step == "port"
    assert "port broke" in str(caught.value)
    assert ("start", "relay") not in rec.events
    undone = [n for k, n in rec.events if k == "undo"]
    # Every step that started, highest index first, the failed one too.
    assert undone == ["port", "bridge", "link", "vf"]
    assert rec.progress[-1] == 0  # the undo completed: nothing is left started


def test_a_failure_beside_running_lanes_waits_for_them_and_undoes_them_too() -> None:
    rec = Recorder()
    rec.fail.add("y")
    p = phased([[step("a")]], [[step("x", op="meet")], [step("y", op="meet")]])
    with pytest.raises(PlanStepFailed) as caught:
        run(p, rec)
    assert caught.value.step == "y"
    assert [n for k, n in rec.events if k == "undo"] == ["y", "x", "a"]


def test_an_error_without_a_message_is_named_by_its_type() -> None:
    class Silent(Recorder):
        def work(self, name: str) -> None:
            raise AssertionError

    with pytest.raises(PlanStepFailed, match="step 'a' failed: AssertionError"):
        executor.execute(plan(step("a")), Silent())


def test_plans_refuse_bad_layouts_round_trip_and_print_phases_and_lanes() -> None:
    a, b, c, d = step("a"), step("b"), step("c"), step("d")
    with pytest.raises(ValueError, match="do not lay out steps 1 to 2 in order"):
        Plan("plug", "port-1", "passthrough", (a, b), phases=(((1,), (0,)),))
    with pytest.raises(ValueError, match="each once"):
        Plan("plug", "port-1", "passthrough", (a, b), phases=(((0,),),))
    with pytest.raises(ValueError, match="no empty lane"):
        Plan("plug", "port-1", "passthrough", (a,), phases=(((0,), ()),))
    p = phased([[a]], [[b, c], [d]])
    assert p.steps == (a, b, c, d) and p.phases == (((0,),), ((1, 2), (3,)))
    again = Plan.from_dict(p.to_dict())
    assert again == p
    text = p.describe()
    assert "  phase 1:\n    1. a\n" in text
    assert "  phase 2, 2 lanes at the same time:\n    lane 1:\n      2. b\n" in text
    assert "    lane 2:\n      4. d\n" in text
    assert "undo: rollback(name='d')" in text


def test_unknown_operations_are_refused_before_anything_runs() -> None:
    rec = Recorder()
    bad = plan(Step("evil", Operation("__init__", {})))
    with pytest.raises(PlanStepFailed, match="unknown operation"):
        run(bad, rec)
    assert rec.events == []


# -- grouped calls (the privileged helper's one round trip) ---------------------------


class Grouping(Recorder):
    """A backend whose "priv" steps (and their "unpriv" undos) can go in one
    call, as the host's privileged changes do."""

    OPERATIONS = Recorder.OPERATIONS | {"priv", "unpriv"}
    GROUPABLE = frozenset({"priv", "unpriv"})

    def __init__(self) -> None:
        super().__init__()
        self.groups: list[tuple[list[str], bool]] = []

    def priv(self, name: str) -> None:
        self.work(name)

    def unpriv(self, name: str) -> None:
        self._log("undo", name)
        if "undo " + name in self.fail:
            raise RuntimeError(f"undo of {name} broke")

    def call_group(self, ops: list[Operation], keep_going: bool = False) -> list[Exception | None]:
        self.groups.append(([op.args["name"] for op in ops], keep_going))
        outcomes: list[Exception | None] = []
        for op in ops:
            try:
                getattr(self, op.name)(**op.args)
                outcomes.append(None)
            except Exception as e:
                outcomes.append(e)
                if not keep_going:
                    break
        return outcomes


def gstep(name: str, op: str = "priv") -> Step:
    undo = "unpriv" if op == "priv" else "rollback"
    return Step(name, Operation(op, {"name": name}), Operation(undo, {"name": name}))


def forwarder_like() -> Plan:
    # The shape of a forwarder plug's second phase: the representor, the
    # VF's driver and settings (privileged), then the relay; the OVS port in
    # a lane beside them.
    return phased([[gstep("link"), gstep("vf"), gstep("bind"), gstep("relay", op="work")],
                   [gstep("port", op="work")]])


def test_neighbouring_groupable_steps_of_a_lane_go_in_one_call() -> None:
    rec = Grouping()
    executor.execute(forwarder_like(), rec, on_progress=rec.progress.append)
    # link, vf and bind go in one call; the relay and the OVS-like step are
    # called one by one.
    assert rec.groups == [(["link", "vf", "bind"], False)]
    assert sorted(rec.ended()) == ["bind", "link", "port", "relay", "vf"]
    order = rec.ended()
    assert order.index("link") < order.index("vf") < order.index("bind") < order.index("relay")
    assert rec.progress == [5]


def test_a_failure_inside_a_group_stops_the_rest_of_it_and_undoes_all_of_it() -> None:
    rec = Grouping()
    rec.fail.add("vf")
    p = phased([[gstep("port", op="work")]],
               [[gstep("link"), gstep("vf"), gstep("bind"), gstep("relay", op="work")]])
    with pytest.raises(PlanStepFailed) as caught:
        executor.execute(p, rec, on_progress=rec.progress.append)
    assert caught.value.step == "vf"
    assert ("start", "bind") not in rec.events  # after vf in the call: never started
    assert ("start", "relay") not in rec.events
    # Undone last first: the whole call in one, then the port alone.
    assert [n for k, n in rec.events if k == "undo"] == ["bind", "vf", "link", "port"]
    assert rec.groups[-1] == (["bind", "vf", "link"], True)


def test_undo_groups_neighbouring_groupable_undos_in_reverse_and_keeps_going() -> None:
    rec = Grouping()
    rec.fail.add("undo vf")
    p = forwarder_like()
    done = undo.undo(p.steps, rec)
    assert [n for k, n in rec.events if k == "undo"] == ["port", "relay", "bind", "vf", "link"]
    assert rec.groups == [(["bind", "vf", "link"], True)]
    assert done.errors == ["vf: undo of vf broke"] and done.warnings == []


class Remote:
    """A begun operation whose work runs on a thread of its own, as an OVSDB
    transaction runs on the connection's thread."""

    def __init__(self, work: Callable[[], None] | None, deadline: float) -> None:
        self.done: futures.Future[None] = futures.Future()
        self.deadline = deadline
        self.error: Exception | None = None
        if work is None:
            return  # never reports: only the deadline ends the wait

        def run() -> None:
            try:
                work()
            except Exception as e:
                self.error = e
            self.done.set_result(None)

        threading.Thread(target=run, daemon=True).start()

    def wait(self) -> None:
        if not self.done.done():
            raise TimeoutError("no answer before the deadline")
        if self.error is not None:
            raise self.error


class Starting(Grouping):
    """Grouping, plus "remote" steps that the executor begins (see
    ``Host.begin``) instead of calling."""

    OPERATIONS = Grouping.OPERATIONS | {"remote"}
    STARTABLE = frozenset({"remote"})

    def __init__(self) -> None:
        super().__init__()
        self.begun_on: list[int] = []
        self.meeting: set[str] = set()  # remote steps that meet at the barrier
        self.silent: set[str] = set()  # remote steps that never report
        self.wait_for_failure: set[str] = set()  # remote steps that end after a failure
        self.a_step_failed = threading.Event()

    def _log(self, kind: str, name: str) -> None:
        super()._log(kind, name)
        if kind == "fail":
            self.a_step_failed.set()

    def remote(self, name: str) -> None:
        raise AssertionError("a startable step is begun, never called")

    def begin(self, op: Operation) -> Remote:
        name = op.args["name"]
        self.begun_on.append(threading.get_ident())
        if "begin " + name in self.fail:
            raise ValueError(f"{name}: refused before anything was sent")
        if name in self.silent:
            return Remote(None, time.monotonic() + 0.2)

        def work() -> None:
            self.threads[name] = threading.get_ident()
            if name in self.wait_for_failure:
                assert self.a_step_failed.wait(10)
            if name in self.meeting:
                self.meet(name)
            else:
                self.work(name)

        return Remote(work, time.monotonic() + 10)


def rstep(name: str) -> Step:
    return Step(name, Operation("remote", {"name": name}), Operation("rollback", {"name": name}))


def test_a_begun_lane_works_elsewhere_while_another_runs_on_the_calling_thread() -> None:
    rec = Starting()
    rec.meeting.add("port")
    # The port's work and the chain meet at a barrier: had the executor
    # waited for the port before running the chain, neither would end.
    p = phased([[gstep("vf"), gstep("chain", op="meet")], [rstep("port")]])
    executor.execute(p, rec, on_progress=rec.progress.append)
    assert sorted(rec.ended()) == ["chain", "port", "vf"]
    me = threading.get_ident()
    assert rec.begun_on == [me]
    assert rec.threads["vf"] == me  # the VF steps ran here, not on a pool thread
    assert rec.threads["port"] != me


def test_a_begun_step_that_fails_is_reported_and_the_rest_undone() -> None:
    rec = Starting()
    rec.fail.add("port")
    p = phased([[gstep("vf"), gstep("link")], [rstep("port")]])
    with pytest.raises(PlanStepFailed) as caught:
        executor.execute(p, rec, on_progress=rec.progress.append)
    assert caught.value.step == "port"
    assert "port broke" in str(caught.value)
    # vf and link ran (they did not wait for the port); the port, which
    # never ended, is undone with them.
    assert [n for k, n in rec.events if k == "undo"] == ["port", "link", "vf"]
    assert rec.progress[-1] == 0


def test_a_step_that_cannot_begin_starts_nothing_else() -> None:
    rec = Starting()
    rec.fail.add("begin port")
    p = phased([[gstep("vf")], [rstep("port")], [gstep("link")]])
    with pytest.raises(PlanStepFailed, match="refused before anything was sent") as caught:
        executor.execute(p, rec)
    assert caught.value.step == "port"
    assert rec.events == []  # nothing started (the port was refused before it was sent)


def test_a_failure_beside_a_begun_step_waits_for_it_and_undoes_it() -> None:
    rec = Starting()
    rec.fail.add("vf")
    rec.wait_for_failure.add("port")  # still at work when vf fails
    p = phased([[gstep("vf")], [rstep("port")]])
    with pytest.raises(PlanStepFailed) as caught:
        executor.execute(p, rec)
    assert caught.value.step == "vf"
    assert ("end", "port") in rec.events
    assert [n for k, n in rec.events if k == "undo"] == ["port", "vf"]


def test_a_begun_step_that_never_reports_fails_at_its_deadline() -> None:
    rec = Starting()
    rec.silent.add("port")
    p = phased([[gstep("vf")], [rstep("port")]])
    with pytest.raises(PlanStepFailed, match="no answer before the deadline") as caught:
        executor.execute(p, rec)
    assert caught.value.step == "port"
    assert [n for k, n in rec.events if k == "undo"] == ["port", "vf"]


# -- a failed step is undone too ------------------------------------------------------


def test_the_failed_step_itself_is_undone_with_the_steps_before_it() -> None:
    # A step may change the host before it fails (a driver bind unbinds the
    # old driver first): its own undo runs too, after nothing that came later.
    rec = Recorder()
    rec.fail.add("bind")
    with pytest.raises(PlanStepFailed) as caught:
        run(plan(step("link"), step("bind"), step("relay")), rec)
    assert caught.value.step == "bind"
    assert [n for k, n in rec.events if k == "undo"] == ["bind", "link"]
    assert rec.progress[-1] == 0


def test_a_group_call_that_fails_as_a_whole_undoes_every_member() -> None:
    class Broken(Grouping):
        def call_group(self, ops: list[Operation], keep_going: bool = False
                       ) -> list[Exception | None]:
            if not keep_going:
                raise ConnectionError("privileged helper gone")
            return super().call_group(ops, keep_going)

    rec = Broken()
    p = phased([[gstep("vf"), gstep("link")]])
    with pytest.raises(PlanStepFailed, match="privileged helper gone"):
        executor.execute(p, rec)
    assert [n for k, n in rec.events if k == "undo"] == ["link", "vf"]


def test_an_undo_of_something_gone_is_a_warning_not_an_error() -> None:
    from smartnic_vif.model.errors import NotFound

    class Vanished(Grouping):
        def unpriv(self, name: str) -> None:
            super().unpriv(name)
            if name == "link":
                raise NotFound("network device tap1 (nor eth3) does not exist")

    rec = Vanished()
    rec.fail.add("undo vf")
    done = undo.undo(forwarder_like().steps, rec)
    # Every undo ran, the missing link's as a warning, the broken one as an error.
    assert [n for k, n in rec.events if k == "undo"] == ["port", "relay", "bind", "vf", "link"]
    assert done.warnings == ["link: network device tap1 (nor eth3) does not exist"]
    assert done.errors == ["vf: undo of vf broke"]


def test_a_failed_undo_of_the_step_that_failed_is_a_warning() -> None:
    # Nothing says the failed step changed anything (a daemon that never
    # answered): its undo is a precaution, and its failure does not make the
    # rest count as unfinished. A finished step's failed undo does.
    class Unreachable(Recorder):
        def rollback(self, name: str) -> None:
            super().rollback(name)
            raise TimeoutError(f"{name}: no answer")

    rec = Unreachable()
    rec.fail.add("relay")
    with pytest.raises(PlanStepFailed) as caught:
        run(plan(step("vf"), step("relay")), rec)
    assert [n for k, n in rec.events if k == "undo"] == ["relay", "vf"]
    assert caught.value.undo_errors == ["vf: vf: no answer"]
    assert caught.value.undo_warnings == [
        "relay (never completed; undo not confirmed): relay: no answer"]
