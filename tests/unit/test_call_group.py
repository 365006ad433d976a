"""Host.call_group: privileged changes in one round trip, none for a change
that changes nothing. The privileged helper is replaced by a recorder that
answers as the real one does (one outcome per change that ran)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from smartnic_vif.decisions.plan import Operation
from smartnic_vif.host import privileged
from smartnic_vif.host.backend import Host
from smartnic_vif.model.errors import NotFound

NOTE = Operation("configure_link", {"ifname": "rep0", "new_name": "rep0"})
FLAGS = Operation("configure_link", {"ifname": "rep0", "mtu": 1450, "up": True,
                                     "promisc": True})
RENAME = Operation("configure_link", {"ifname": "rep0", "new_name": "vm-port0"})
SET_VF = Operation("set_vf", {"pf_address": "0000:05:00.0", "vf_index": 3,
                              "settings": {"mac": "fa:16:3e:00:00:01"}})


class Helper:
    """Stands in for privileged.apply: records each round trip; a change
    whose ifname is in ``missing`` fails as the real one does."""

    def __init__(self, missing: frozenset[str] = frozenset()) -> None:
        self.round_trips: list[list[Any]] = []
        self.missing = missing

    def apply(self, changes: list[Any], keep_going: bool = False) -> list[Any]:
        self.round_trips.append(changes)
        outcomes: list[Any] = []
        for _name, args in changes:
            if args.get("ifname") in self.missing:
                outcomes.append(["error", "NotFound", [f"network device {args['ifname']}"]])
                if not keep_going:
                    break
            else:
                outcomes.append(["ok", None])
        return outcomes


@pytest.fixture
def helper(monkeypatch: pytest.MonkeyPatch) -> Helper:
    h = Helper()
    monkeypatch.setattr(privileged, "apply", h.apply)
    # The helper's own configuration, which Host checks against its own once.
    monkeypatch.setattr(privileged, "helper_configuration", lambda: ["simulated", "/sim"])
    return h


def host() -> Host:
    return Host(SimpleNamespace(sysfs_root="/sim", kernel_backend="simulated"))


def test_a_link_change_that_changes_nothing_makes_no_round_trip(helper: Helper) -> None:
    assert host().call_group([NOTE]) == [None]
    assert helper.round_trips == []
    # Leaving out every value but the name is nothing to change either.
    assert host().call_group([Operation("configure_link", {"ifname": "rep0"})]) == [None]
    assert helper.round_trips == []


def test_a_rename_or_a_flag_is_a_change(helper: Helper) -> None:
    assert host().call_group([RENAME]) == [None]
    assert host().call_group([FLAGS]) == [None]
    assert [[name for name, _ in trip] for trip in helper.round_trips] == [["set_link"],
                                                                          ["set_link"]]
    assert helper.round_trips[1][0][1] == {"ifname": "rep0", "mtu": 1450, "up": True,
                                           "promisc": True, "or_name": None}


def test_no_op_changes_keep_their_place_among_real_ones(helper: Helper) -> None:
    assert host().call_group([NOTE, FLAGS, NOTE, SET_VF]) == [None, None, None, None]
    # One round trip with only the two real changes, in order.
    assert len(helper.round_trips) == 1
    assert [name for name, _ in helper.round_trips[0]] == ["set_link", "set_vf"]


def test_after_a_failure_nothing_later_is_reported_done(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Helper(missing=frozenset({"rep0"}))
    monkeypatch.setattr(privileged, "apply", h.apply)
    monkeypatch.setattr(privileged, "helper_configuration", lambda: ["simulated", "/sim"])
    results = host().call_group([NOTE, FLAGS, NOTE, SET_VF])
    # The no-op before the failure is done; the failure ends the group.
    assert results[0] is None
    assert isinstance(results[1], NotFound)
    assert len(results) == 2
    # Undo keeps going: every change gets its own outcome.
    results = host().call_group([FLAGS, NOTE, SET_VF], keep_going=True)
    assert isinstance(results[0], NotFound) and results[1:] == [None, None]
