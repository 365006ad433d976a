"""doctor's offload checks judged from plain values
(:mod:`smartnic_vif.decisions.offload`): each check passing and failing, and
what each failure says to run."""

from __future__ import annotations

import pytest

from smartnic_vif.decisions.offload import (
    Check,
    PluggedRepresentor,
    judge_eswitch,
    judge_offload,
    judge_ovs_offload,
    judge_representors,
)

PF0, PF1 = "0000:05:00.0", "0000:05:00.1"


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def test_ovs_offload_on_with_default_tc_policy() -> None:
    checks = by_name(judge_ovs_offload({"hw-offload": "true"}))
    assert checks["hw_offload"] == Check("hw_offload", True, "OVS other_config:hw-offload=true",
                                         "")
    assert checks["tc_policy"].ok
    assert checks["tc_policy"].detail.startswith("OVS tc-policy none (not set): ")


@pytest.mark.parametrize(("other_config", "detail"), [
    ({}, "OVS other_config:hw-offload is not set (offload off)"),
    ({"hw-offload": "false"}, "OVS other_config:hw-offload=false (offload off)"),
])
def test_ovs_offload_off(other_config: dict[str, str], detail: str) -> None:
    check = by_name(judge_ovs_offload(other_config))["hw_offload"]
    assert not check.ok and check.detail == detail
    assert check.fix.startswith("ovs-vsctl set Open_vSwitch . other_config:hw-offload=true")
    assert "restart ovs-vswitchd" in check.fix


@pytest.mark.parametrize(("policy", "ok"), [("none", True), ("skip_sw", True),
                                            ("skip_hw", False), ("bogus", False)])
def test_tc_policy(policy: str, ok: bool) -> None:
    check = by_name(judge_ovs_offload({"hw-offload": "true", "tc-policy": policy}))["tc_policy"]
    assert check.ok is ok
    assert policy in check.detail
    if policy == "skip_hw":
        assert "never go to the NIC" in check.detail
        assert check.fix.startswith("ovs-vsctl set Open_vSwitch . other_config:tc-policy=none")
    if policy == "bogus":
        assert check.fix.startswith("ovs-vsctl remove Open_vSwitch . other_config tc-policy")


def test_representors_all_offloading() -> None:
    plugged = [PluggedRepresentor("tap1", "0000:05:08.0", PF0, "on"),
               PluggedRepresentor("rep1", "0000:05:08.1", PF0, "on")]
    check = judge_representors(plugged)
    assert check.ok and check.detail == "hw-tc-offload on for the 2 representors plugged on OVS"
    assert judge_representors([]).ok
    assert judge_representors([]).detail == "no VF representor is plugged on OVS"


def test_representors_not_offloading_each_say_how_to_fix() -> None:
    plugged = [
        PluggedRepresentor("tap1", "0000:05:08.0", PF0, "on"),
        PluggedRepresentor("tap2", "0000:05:08.1", PF0, "off"),
        PluggedRepresentor("tap3", "0000:05:09.0", PF1, "off [fixed]", fixed=True),
        PluggedRepresentor("tap4", "0000:05:09.1", PF1, error="netdev tap4 does not exist"),
    ]
    check = judge_representors(plugged)
    assert not check.ok
    assert check.detail == (
        "3/4 representors plugged on OVS do not offload: "
        "tap2 (VF 0000:05:08.1): hw-tc-offload off; "
        "tap3 (VF 0000:05:09.0): hw-tc-offload off [fixed]; "
        "tap4 (VF 0000:05:09.1): cannot read hw-tc-offload: netdev tap4 does not exist")
    fixes = check.fix.split("; ")
    assert fixes[0] == "ethtool -K tap2 hw-tc-offload on"
    assert fixes[1].startswith("tap3's driver does not let hw-tc-offload change: put PF "
                               f"{PF1} in switchdev mode")
    assert fixes[2].startswith("make tap4 readable")


def test_eswitch_modes() -> None:
    ok = judge_eswitch({PF0: "switchdev", PF1: "switchdev"}, {})
    assert ok.ok and ok.detail == f"devlink eswitch mode: {PF0} switchdev, {PF1} switchdev"
    assert judge_eswitch({}, {}).ok
    bad = judge_eswitch({PF0: "switchdev", PF1: "legacy"}, {})
    assert not bad.ok
    assert bad.detail == (f"devlink eswitch mode: {PF0} switchdev, {PF1} legacy; "
                          "offload needs switchdev")
    assert bad.fix == f"devlink dev eswitch set pci/{PF1} mode switchdev"


def test_eswitch_mode_that_cannot_be_read_fails() -> None:
    why = "devlink pci/0000:05:00.0: reading the eswitch mode needs CAP_NET_ADMIN (run as root)"
    check = judge_eswitch({PF0: None}, {PF0: why})
    assert not check.ok and f"{PF0} unknown ({why})" in check.detail
    assert check.fix == f"check devlink dev eswitch show pci/{PF0} as root"


def test_judge_offload_without_ovsdb_judges_only_the_eswitch() -> None:
    checks = judge_offload(None, None, {PF0: "switchdev"}, {})
    assert [c.name for c in checks] == ["eswitch_mode"]
    checks = judge_offload({"hw-offload": "true"}, [], {PF0: "switchdev"}, {})
    assert [c.name for c in checks] == ["hw_offload", "tc_policy", "hw_tc_offload",
                                        "eswitch_mode"]
    assert all(c.ok and c.fix == "" for c in checks)
