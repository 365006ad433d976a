"""A plan journalled before plans had phases is still undone after an upgrade.

``tests/fixtures/journal_before_phases.json`` holds a ``ports`` row exactly as
the code before phases (main at dc36b97, with its step-dependency executor)
wrote it: ``StateStore.claim`` of a forwarder plug plan with a rename and
hooks, ``steps_started`` its first journal horizon. Its steps carry
``after`` and it has no ``phases``.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from smartnic_vif.decisions.plan import Operation
from smartnic_vif.host import undo
from smartnic_vif.host.backend import Host
from smartnic_vif.host.state import StateStore

FIXTURE = Path(__file__).parent.parent / "fixtures" / "journal_before_phases.json"


class Recording:
    """Records each undo operation and the privileged calls they go in."""

    OPERATIONS = Host.OPERATIONS
    GROUPABLE = Host.GROUPABLE

    def __init__(self) -> None:
        self.ops: list[Operation] = []
        self.groups: list[list[str]] = []

    def call_group(self, ops: list[Operation], keep_going: bool = False) -> list[None]:
        self.groups.append([op.name for op in ops])
        self.ops += ops
        return [None] * len(ops)

    def __getattr__(self, name: str) -> Any:
        if name not in Host.OPERATIONS:
            raise AttributeError(name)
        return lambda **args: self.ops.append(Operation(name, args))


def journal_of_old_code(tmp_path: Path, steps_started: int | None = None) -> StateStore:
    """A state database holding the fixture's row, written as the old code wrote it."""
    [row] = json.loads(FIXTURE.read_text())["rows"]
    if steps_started is not None:
        row["steps_started"] = steps_started
    store = StateStore(str(tmp_path))
    with sqlite3.connect(os.path.join(tmp_path, "state.db")) as db:
        db.execute("INSERT INTO ports (port_id, vf_address, mode, phase, request, plan,"
                   " steps_started, updated) VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
                   [row[k] for k in ("port_id", "vf_address", "mode", "phase", "request",
                                     "plan", "steps_started")])
    return store


def old_undos(upto: int) -> list[Operation]:
    """The old plan's undo operations of steps [0, upto), last first, read
    straight from the fixture's JSON."""
    [row] = json.loads(FIXTURE.read_text())["rows"]
    steps = json.loads(row["plan"])["steps"][:upto]
    return [Operation.from_dict(s["undo"]) for s in reversed(steps) if s["undo"]]


def test_the_fixture_is_in_the_old_form() -> None:
    [row] = json.loads(FIXTURE.read_text())["rows"]
    plan = json.loads(row["plan"])
    assert "phases" not in plan and any("after" in s for s in plan["steps"])
    assert row["phase"] == "plugging" and row["steps_started"] == len(plan["steps"])


@pytest.mark.parametrize("steps_started", [None, 2, 5])
def test_a_plan_journalled_before_phases_is_undone_after_an_upgrade(
    tmp_path: Path, steps_started: int | None
) -> None:
    store = journal_of_old_code(tmp_path, steps_started)
    [record] = store.all()
    assert record.plan is not None and record.mode == "forwarder"
    upto = record.steps_started
    # What reconcile (SmartNICPlugin.recover) and unplug run.
    host = Recording()
    undone = undo.undo(record.plan.steps[:upto], host)
    assert undone == undo.Undone()
    # Exactly the old plan's undos of its started steps, last first.
    assert host.ops == old_undos(upto)
    if upto == len(record.plan):
        assert [op.name for op in host.ops] == [
            "forwarder_remove", "ovs_delete_port", "set_vf", "bind_driver", "configure_link"]
        assert host.groups == [["set_vf", "bind_driver", "configure_link"]]
    # The old plan reads as one lane in its journal order, and prints.
    assert record.plan.phases == ((tuple(range(len(record.plan))),),)
    assert "1. run vendor hook (pre-plug)" in record.plan.describe()
