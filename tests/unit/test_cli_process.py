"""The ``smartnic-vif`` program around :func:`main` (:func:`run`): a read
command runs without the cyclic garbage collector, and every command
freezes its objects before the interpreter's exit (see ``run``'s docstring).
Each case runs in a forked copy of the test process, whose collector the
case may change."""

from __future__ import annotations

import gc
import sys

import pytest

from smartnic_vif.cli import main as cli
from tests.fixtures.forked import in_one_thread


def _run(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[bool, int, int]:
    """Run ``run()`` on ``argv`` with a stand-in ``main``: whether the
    collector was on while the command ran, the exit status, and how many
    objects were frozen after it."""
    seen: list[bool] = []

    def command() -> int:
        seen.append(gc.isenabled())
        return 3

    monkeypatch.setattr(cli, "main", command)
    monkeypatch.setattr(sys, "argv", ["smartnic-vif", *argv])
    gc.enable()
    gc.unfreeze()
    with pytest.raises(SystemExit) as done:
        cli.run()
    return seen[0], int(done.value.code or 0), gc.get_freeze_count()


@pytest.mark.parametrize("argv", [
    ["status", "--json"], ["doctor"], ["--config-file", "x.conf", "inventory"],
    ["pci-spec", "--config-file", "x.conf"],
])
def test_a_read_runs_without_the_collector_and_freezes_at_the_end(
        argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def case() -> None:
        collector_on, status, frozen = _run(argv, monkeypatch)
        assert not collector_on
        assert status == 3
        assert frozen > 1000

    in_one_thread(case)


@pytest.mark.parametrize("argv", [
    ["attach", "--port-id", "p"], ["reconcile", "--watch"], ["demo"], ["sim", "create"], [],
])
def test_other_commands_keep_the_collector(argv: list[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def case() -> None:
        collector_on, status, frozen = _run(argv, monkeypatch)
        assert collector_on
        assert status == 3
        assert frozen > 1000

    in_one_thread(case)
