"""plan_repair: which steps of a plugged port's plan the observed host no
longer reflects, what was wrong, and in which order they run again."""

from __future__ import annotations

from typing import Any

from smartnic_vif.decisions import plug
from smartnic_vif.decisions.plan import Plan
from smartnic_vif.decisions.repair import ObservedPort, OvsPortState, link_names, plan_repair
from tests.decisions.hosts import SMARTNIC_PF, mixed_host

INVENTORY = mixed_host()
VF = INVENTORY.pf(SMARTNIC_PF).vfs[2]
assert VF.representor is not None
REP = VF.representor.name
TAP = "tap11111111-22"
MAC = "fa:16:3e:00:00:01"
PORT_ID = "11111111-2222-3333-4444-555555555555"
INSTANCE = "66666666-7777-8888-9999-000000000000"
VHOST = "/run/vhu/vhu11111111-22"


def forwarder_plan(hook: bool = False) -> Plan:
    port = plug.PortRequest(
        port_id=PORT_ID, mode=plug.FORWARDER, mac=MAC, bridge="br-int", mtu=1450,
        instance_uuid=INSTANCE, vf_address=VF.address, representor_name=TAP,
        vhost_path=VHOST)
    snapshot = plug.VfSnapshot(
        settings={"mac": "00:00:00:00:00:00", "vlan": 0, "qos": 0, "trust": False,
                  "spoofchk": True, "link_state": "auto"},
        driver="nfp", representor=plug.LinkState(name=REP, mtu=1500, up=False))
    return plug.plan_plug(port, INVENTORY, snapshot, plug.PlugOptions(hook=hook))


def healthy(**changes: Any) -> ObservedPort:
    """What the host looks like right after the plug, with ``changes``."""
    values: dict[str, Any] = dict(
        vf_settings={"mac": MAC.upper(), "vlan": 0, "qos": 0, "trust": False,
                     "spoofchk": True, "link_state": "auto"},
        vf_driver="vfio-pci", vf_driver_known=True,
        links={TAP: plug.LinkState(TAP, 1450, True, True), REP: None},
        ovs_ports={TAP: OvsPortState("br-int", {
            "iface-id": PORT_ID, "attached-mac": MAC, "vm-uuid": INSTANCE,
            "iface-status": "active"}, 1450)},
        relays={VHOST: VF.address},
    )
    values.update(changes)
    return ObservedPort(**values)


def ops(repairs: list[Any]) -> list[str]:
    return [r.do.name for r in repairs]


def test_nothing_drifted_nothing_to_repair() -> None:
    plan = forwarder_plan(hook=True)
    assert link_names(plan) == {TAP, REP}
    assert plan_repair(plan, healthy()) == []


def test_a_forgotten_relay_is_added_again_then_the_link_checked() -> None:
    plan = forwarder_plan()
    repairs = plan_repair(plan, healthy(relays={VHOST: None}))
    assert ops(repairs) == ["forwarder_add", "confirm_link_up"]
    relay, check = repairs
    assert relay.do == next(s.do for s in plan.steps if s.do.name == "forwarder_add")
    assert relay.describe() == (f"no virtio-forwarder relay pairs {VF.address} with {VHOST} "
                                f"-> {relay.title}")
    assert check.problem is None  # a check after the repairs, not a repair


def test_after_a_reboot_every_step_but_the_hooks_runs_again_in_plan_order() -> None:
    plan = forwarder_plan(hook=True)
    rebooted = healthy(
        vf_settings={"mac": "00:00:00:00:00:00", "vlan": 0, "qos": 0, "trust": False,
                     "spoofchk": True},
        vf_driver="nfp",
        links={TAP: None, REP: plug.LinkState(REP, 1500, False, False)},
        ovs_ports={TAP: OvsPortState("br-int", {
            "iface-id": PORT_ID, "attached-mac": MAC, "vm-uuid": INSTANCE,
            "iface-status": "active"}, 1450)},  # OVSDB survives a reboot
        relays={VHOST: None})
    repairs = plan_repair(plan, rebooted)
    assert ops(repairs) == ["configure_link", "configure_link", "bind_driver", "set_vf",
                            "forwarder_add", "confirm_link_up"]
    assert [r.step for r in repairs] == sorted(r.step for r in repairs)
    rename, flags = repairs[0], repairs[1]
    assert rename.problem == f"representor is named {REP}, expected {TAP}"
    assert flags.problem == (f"{TAP} has MTU 1500, expected 1450; {TAP} is down, expected up; "
                             f"{TAP} is not promiscuous, expected promiscuous")
    assert repairs[2].problem == "VF driver is nfp, expected vfio-pci"
    assert repairs[3].problem == f"VF MAC is 00:00:00:00:00:00, expected {MAC}"


def test_vf_settings_and_ovs_port_differences_are_each_named() -> None:
    plan = forwarder_plan()
    observed = healthy(
        vf_settings={"mac": MAC, "vlan": 5, "qos": 0, "trust": True, "spoofchk": False},
        ovs_ports={TAP: OvsPortState("br-other", {
            "iface-id": PORT_ID, "attached-mac": "fa:16:3e:00:00:09", "vm-uuid": INSTANCE,
            "iface-status": "active"}, None)})
    repairs = plan_repair(plan, observed)
    assert ops(repairs) == ["set_vf", "ovs_set_port", "confirm_link_up"]
    assert repairs[0].problem == ("VF VLAN is 5, expected 0; VF trust is on, expected off; "
                                  "VF spoofchk is off, expected on")
    assert repairs[1].problem == (
        f"OVS port {TAP} is on br-other, expected br-int; "
        f"OVS port {TAP} external_ids:attached-mac is fa:16:3e:00:00:09, expected {MAC}; "
        f"OVS port {TAP} mtu_request is None, expected 1450")
    missing = plan_repair(plan, healthy(ovs_ports={TAP: None}))
    assert [r.problem for r in missing][0] == f"OVS port {TAP} is missing from br-int"


def test_what_could_not_be_observed_is_not_repaired() -> None:
    plan = forwarder_plan()
    blind = ObservedPort(errors=("cannot read VF",))
    assert plan_repair(plan, blind) == []
    # A relay paired with another VF is reported; ADD_SOCK will then say why it fails.
    [relay, _check] = plan_repair(plan, healthy(relays={VHOST: "0000:99:00.1"}))
    assert relay.problem == (f"virtio-forwarder pairs {VHOST} with 0000:99:00.1, "
                             f"expected {VF.address}")


def test_a_representor_that_is_gone_is_reported_once() -> None:
    plan = forwarder_plan()
    repairs = plan_repair(plan, healthy(links={TAP: None, REP: None}))
    problems = [r.problem for r in repairs if r.problem]
    assert problems == [f"representor {TAP} or {REP} does not exist"]
