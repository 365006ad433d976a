"""plan_plug: which steps a plug makes, what each one undoes, and which of
them may run side by side."""

from __future__ import annotations

from smartnic_vif.decisions import plug
from smartnic_vif.decisions.plan import Plan
from smartnic_vif.host import executor
from smartnic_vif.host.backend import Host
from tests.decisions.hosts import SMARTNIC_PF, mixed_host

INVENTORY = mixed_host()
VF = INVENTORY.pf(SMARTNIC_PF).vfs[3]
assert VF.representor is not None
REP = VF.representor.name
SNAPSHOT = plug.VfSnapshot(
    settings={"mac": "00:00:00:00:00:00", "vlan": 7, "qos": 0, "trust": False,
              "spoofchk": True, "link_state": "auto"},
    driver="nfp",
    representor=plug.LinkState(name=REP, mtu=1500, up=False),
)


def port(mode: str = plug.PASSTHROUGH, **changes: object) -> plug.PortRequest:
    values: dict[str, object] = dict(
        port_id="11111111-2222-3333-4444-555555555555", mode=mode, mac="fa:16:3e:00:00:01",
        bridge="br-int", mtu=9000, instance_uuid="66666666-7777-8888-9999-000000000000",
        vf_address=VF.address,
        vhost_path="/run/vhu/vhu11111111-22" if mode == plug.FORWARDER else None)
    values.update(changes)
    return plug.PortRequest(**values)  # type: ignore[arg-type]


def names(p: Plan) -> list[str]:
    return [s.do.name for s in p.steps]


def index(p: Plan, name: str) -> int:
    return names(p).index(name)


def before(p: Plan, i: int) -> set[int]:
    """Every step that must be done before step ``i`` starts, directly or not."""
    found: set[int] = set()
    todo = list(p.needs(i))
    while todo:
        j = todo.pop()
        if j not in found:
            found.add(j)
            todo.extend(p.needs(j))
    return found


def test_passthrough_plan_sets_everything_and_its_undo_restores_the_snapshot() -> None:
    p = plug.plan_plug(port(), INVENTORY, SNAPSHOT, plug.PlugOptions())
    assert names(p) == ["configure_link", "set_vf", "ovs_set_port"]
    vf = p.steps[index(p, "set_vf")]
    assert vf.do.args["settings"] == {"mac": "fa:16:3e:00:00:01", "vlan": 0, "qos": 0,
                                      "trust": False, "spoofchk": True}
    assert vf.undo is not None
    assert vf.undo.args["settings"] == {"mac": "00:00:00:00:00:00", "vlan": 7, "qos": 0,
                                        "trust": False, "spoofchk": True}
    link = p.steps[index(p, "configure_link")]
    assert link.undo is not None
    assert link.undo.args == {"ifname": REP, "new_name": REP, "mtu": 1500, "up": False}
    ovs = p.steps[index(p, "ovs_set_port")]
    assert ovs.do.args["port"] == REP and ovs.do.args["mtu"] == 9000
    # The bridge, if missing, is made in the port's own transaction; the
    # undo removes only the port.
    assert ovs.do.args["datapath_type"] == "system"
    assert ovs.undo is not None and ovs.undo.args == {"port": REP}


def test_a_missing_bridge_gets_the_ports_datapath_type_or_the_default() -> None:
    opts = plug.PlugOptions(default_datapath_type="netdev")
    ovs = index(plug.plan_plug(port(), INVENTORY, SNAPSHOT, opts), "ovs_set_port")
    assert plug.plan_plug(port(), INVENTORY, SNAPSHOT, opts).steps[ovs].do.args[
        "datapath_type"] == "netdev"
    p = plug.plan_plug(port(datapath_type="system"), INVENTORY, SNAPSHOT, opts)
    assert p.steps[ovs].do.args["datapath_type"] == "system"


def test_the_representor_is_configured_alone_before_ovs_and_the_vf() -> None:
    # ovs-vswitchd must not open the representor while its state changes (it
    # brought a representor that came up meanwhile back down), so the OVS
    # port and the VF settings both wait for it, and for nothing else.
    p = plug.plan_plug(port(), INVENTORY, SNAPSHOT, plug.PlugOptions())
    link = index(p, "configure_link")
    assert p.needs(link) == frozenset()
    assert p.needs(index(p, "ovs_set_port")) == frozenset({link})
    assert p.needs(index(p, "set_vf")) == frozenset({link})
    # The claim journals every step: what follows the representor needs
    # nothing else, so no later write is due.
    assert executor.first_horizon(p, Host) == len(p)


def test_a_renamed_representor_is_added_to_ovs_only_once_renamed() -> None:
    p = plug.plan_plug(port(representor_name="vfrep3"), INVENTORY, SNAPSHOT,
                       plug.PlugOptions())
    link, ovs = index(p, "configure_link"), index(p, "ovs_set_port")
    assert link in p.needs(ovs)
    assert p.steps[ovs].do.args["port"] == "vfrep3"
    assert p.steps[link].do.args == {"ifname": REP, "new_name": "vfrep3", "mtu": 9000,
                                     "up": True}
    # Undo (last first) deletes the OVS port before the name is given back.
    assert p.steps[ovs].undo is not None and p.steps[ovs].undo.args == {"port": "vfrep3"}
    assert link < ovs


def test_forwarder_relay_waits_for_the_vfio_driver_and_unplug_unwinds_in_reverse() -> None:
    p = plug.plan_plug(port(plug.FORWARDER), INVENTORY, SNAPSHOT, plug.PlugOptions())
    bind, settings, relay = index(p, "bind_driver"), index(p, "set_vf"), index(p, "forwarder_add")
    assert p.steps[bind].do.args == {"address": VF.address, "driver": "vfio-pci"}
    assert p.steps[bind].undo is not None
    assert p.steps[bind].undo.args == {"address": VF.address, "driver": "nfp"}
    # The VF's own changes, one at a time: driver, settings (libvirt's order
    # for a hostdev), then the relay, which opens the VF and reads them.
    link = index(p, "configure_link")
    assert p.needs(bind) == frozenset({link})
    assert bind in p.needs(settings)
    assert p.needs(relay) == frozenset({settings})
    assert p.needs(index(p, "ovs_set_port")) == frozenset({link})
    # The representor goes alone in the first privileged round trip; the
    # claim journals it and the wave after it (driver, OVS port), and the
    # relay is journalled once the OVS port is on its way.
    assert executor.first_horizon(p, Host) == relay
    # Every undo happens in reverse index order: relay first, the OVS port
    # before the representor gets its old state, the VF settings before the
    # VF's own driver comes back (it probes the restored MAC).
    assert relay == len(p.steps) - 1 and link == 0 and bind == 1 and settings == 2
    assert settings < index(p, "ovs_set_port") < relay


def test_hooks_come_first_and_last_around_everything() -> None:
    p = plug.plan_plug(port(plug.FORWARDER), INVENTORY, SNAPSHOT, plug.PlugOptions(hook=True))
    assert names(p)[0] == names(p)[-1] == "run_hook"
    assert p.steps[0].do.args["phase"] == "pre-plug"
    assert p.steps[-1].do.args["phase"] == "post-plug"
    for i in range(1, len(p.steps) - 1):
        assert 0 in before(p, i), p.steps[i].title
    assert p.needs(len(p.steps) - 1) == frozenset(range(len(p.steps) - 1))
    # Only the pre-plug hook starts with the plan, and the representor
    # follows it on its thread; what needs only those two (the VF's driver,
    # the OVS port) is journalled with them.
    assert executor.first_horizon(p, Host) == index(p, "ovs_set_port") + 1


def test_the_plan_round_trips_through_the_journal_format() -> None:
    p = plug.plan_plug(port(plug.FORWARDER, representor_name="vfrep3"), INVENTORY, SNAPSHOT,
                       plug.PlugOptions(hook=True))
    assert Plan.from_dict(p.to_dict()) == p
