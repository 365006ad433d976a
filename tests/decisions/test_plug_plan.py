"""plan_plug: which steps a plug makes, what each one undoes, and its phases
and lanes (what runs side by side)."""

from __future__ import annotations

from smartnic_vif.decisions import plug
from smartnic_vif.decisions.plan import Plan
from smartnic_vif.host import undo
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


def phase_of(p: Plan, i: int) -> int:
    return next(k for k, phase in enumerate(p.phases) if any(i in lane for lane in phase))


def lane_of(p: Plan, i: int) -> tuple[int, ...]:
    return next(lane for phase in p.phases for lane in phase if i in lane)


def calls(p: Plan, lane: tuple[int, ...]) -> list[list[int]]:
    """The lane's steps as the executor calls them (privileged neighbours together)."""
    return list(undo.in_calls(lane, lambda i: p.steps[i].do.name, Host.GROUPABLE))


def steps_named(p: Plan, name: str) -> list[int]:
    return [i for i, s in enumerate(p.steps) if s.do.name == name]


def test_passthrough_plan_sets_everything_and_its_undo_restores_the_snapshot() -> None:
    p = plug.plan_plug(port(), INVENTORY, SNAPSHOT, plug.PlugOptions())
    assert names(p) == ["configure_link", "configure_link", "set_vf", "ovs_set_port",
                        "confirm_link_up"]
    vf = p.steps[index(p, "set_vf")]
    assert vf.do.args["settings"] == {"mac": "fa:16:3e:00:00:01", "vlan": 0, "qos": 0,
                                      "trust": False, "spoofchk": True}
    assert vf.undo is not None
    assert vf.undo.args["settings"] == {"mac": "00:00:00:00:00:00", "vlan": 7, "qos": 0,
                                        "trust": False, "spoofchk": True}
    note, flags = steps_named(p, "configure_link")
    # The first step changes nothing (no rename wished); its undo restores
    # everything later steps change on the representor.
    assert p.steps[note].do.args == {"ifname": REP, "new_name": REP}
    assert p.steps[note].undo is not None
    assert p.steps[note].undo.args == {"ifname": REP, "new_name": REP, "mtu": 1500,
                                       "up": False, "promisc": False}
    assert p.steps[flags].do.args == {"ifname": REP, "mtu": 9000, "up": True, "promisc": True}
    assert p.steps[flags].undo is None
    ovs = p.steps[index(p, "ovs_set_port")]
    assert ovs.do.args["port"] == REP and ovs.do.args["mtu"] == 9000
    # The bridge, if missing, is made in the port's own transaction; the
    # undo removes only the port.
    assert ovs.do.args["datapath_type"] == "system"
    assert ovs.undo is not None and ovs.undo.args == {"port": REP}
    assert p.steps[index(p, "confirm_link_up")].do.args == {"ifname": REP}


def test_a_representor_that_was_promiscuous_stays_so_after_unplug() -> None:
    was = plug.VfSnapshot(settings=SNAPSHOT.settings, driver=SNAPSHOT.driver,
                          representor=plug.LinkState(name=REP, mtu=9000, up=True, promisc=True))
    p = plug.plan_plug(port(), INVENTORY, was, plug.PlugOptions())
    undo = p.steps[0].undo
    assert undo is not None
    assert (undo.args["mtu"], undo.args["up"], undo.args["promisc"]) == (9000, True, True)


def test_a_missing_bridge_gets_the_ports_datapath_type_or_the_default() -> None:
    opts = plug.PlugOptions(default_datapath_type="netdev")
    ovs = index(plug.plan_plug(port(), INVENTORY, SNAPSHOT, opts), "ovs_set_port")
    assert plug.plan_plug(port(), INVENTORY, SNAPSHOT, opts).steps[ovs].do.args[
        "datapath_type"] == "netdev"
    p = plug.plan_plug(port(datapath_type="system"), INVENTORY, SNAPSHOT, opts)
    assert p.steps[ovs].do.args["datapath_type"] == "system"


def test_the_ovs_port_the_representor_flags_and_the_vf_start_together() -> None:
    # Nothing changes the representor before OVS has it (a link change then
    # kept ovs-vswitchd busy when the port came); the flags go beside the
    # OVS port and the VF's settings, and the check waits for all of them.
    p = plug.plan_plug(port(), INVENTORY, SNAPSHOT, plug.PlugOptions())
    note, flags = steps_named(p, "configure_link")
    ovs, vf, check = index(p, "ovs_set_port"), index(p, "set_vf"), index(p, "confirm_link_up")
    assert p.phases == (((note,),), ((flags, vf), (ovs,)), ((check,),))
    # The flags and the VF's settings are one privileged call.
    assert calls(p, lane_of(p, vf)) == [[flags, vf]]
    # The claim journals the first phase; the second is journalled with the
    # check, which has nothing to undo.
    assert (p.journal_mark(0), p.journal_mark(1)) == (1, len(p))


def test_a_renamed_representor_is_added_to_ovs_only_once_renamed() -> None:
    p = plug.plan_plug(port(representor_name="vfrep3"), INVENTORY, SNAPSHOT,
                       plug.PlugOptions())
    note, flags = steps_named(p, "configure_link")
    ovs = index(p, "ovs_set_port")
    assert phase_of(p, note) < phase_of(p, ovs) == phase_of(p, flags)
    assert p.steps[ovs].do.args["port"] == "vfrep3"
    assert p.steps[note].do.args == {"ifname": REP, "new_name": "vfrep3"}
    assert p.steps[flags].do.args["ifname"] == "vfrep3"
    assert p.steps[index(p, "confirm_link_up")].do.args == {"ifname": "vfrep3"}
    # Undo (last first) deletes the OVS port before the name is given back.
    assert p.steps[ovs].undo is not None and p.steps[ovs].undo.args == {"port": "vfrep3"}
    assert p.steps[note].undo is not None
    assert p.steps[note].undo.args["ifname"] == "vfrep3"
    assert p.steps[note].undo.args["new_name"] == REP
    assert note < ovs


def test_forwarder_relay_waits_for_the_vfio_driver_and_unplug_unwinds_in_reverse() -> None:
    p = plug.plan_plug(port(plug.FORWARDER), INVENTORY, SNAPSHOT, plug.PlugOptions())
    bind, settings, relay = index(p, "bind_driver"), index(p, "set_vf"), index(p, "forwarder_add")
    assert p.steps[bind].do.args == {"address": VF.address, "driver": "vfio-pci"}
    assert p.steps[bind].undo is not None
    assert p.steps[bind].undo.args == {"address": VF.address, "driver": "nfp"}
    # The VF's own changes, one at a time: driver, settings (libvirt's order
    # for a hostdev), then the relay, which opens the VF and reads them; the
    # OVS port in a lane beside them.
    note, flags = steps_named(p, "configure_link")
    ovs = index(p, "ovs_set_port")
    assert p.phases[1] == ((flags, bind, settings, relay), (ovs,))
    assert calls(p, lane_of(p, relay)) == [[flags, bind, settings], [relay]]
    # Every undo happens in reverse index order: the OVS port first, the
    # relay, then the VF settings before the VF's own driver comes back (it
    # probes the restored MAC), and the representor's old state last.
    assert note == 0 < bind < settings < relay < ovs
    assert index(p, "confirm_link_up") == len(p) - 1
    assert (p.journal_mark(0), p.journal_mark(1)) == (1, len(p))


def test_hooks_come_first_and_last_around_everything() -> None:
    p = plug.plan_plug(port(plug.FORWARDER), INVENTORY, SNAPSHOT, plug.PlugOptions(hook=True))
    assert names(p)[0] == names(p)[-1] == "run_hook"
    assert p.steps[0].do.args["phase"] == "pre-plug"
    assert p.steps[-1].do.args["phase"] == "post-plug"
    # Each in the lane of the first or last phase: everything else comes
    # after the first and before the last.
    assert p.phases[0] == ((0, 1),)
    assert p.phases[-1] == ((len(p) - 2, len(p) - 1),)
    # The post-plug hook, last, has nothing to undo: it is journalled with
    # the second phase, and no later write is due.
    assert (p.journal_mark(0), p.journal_mark(1)) == (2, len(p))


def test_unplug_restores_the_vf_and_the_representor_in_one_privileged_call() -> None:
    # The undo of the whole plan, as unplug runs it: the OVS port, the relay,
    # then every privileged restore together (one round trip).
    p = plug.plan_plug(port(plug.FORWARDER), INVENTORY, SNAPSHOT, plug.PlugOptions())
    undos = [s.undo.name for s in reversed(p.steps) if s.undo is not None]
    assert undos == ["ovs_delete_port", "forwarder_remove", "set_vf", "bind_driver",
                     "configure_link"]
    assert list(undo.in_calls(undos, lambda n: n, Host.GROUPABLE)) == [
        ["ovs_delete_port"], ["forwarder_remove"], ["set_vf", "bind_driver", "configure_link"]]


def test_the_plan_round_trips_through_the_journal_format() -> None:
    p = plug.plan_plug(port(plug.FORWARDER, representor_name="vfrep3"), INVENTORY, SNAPSHOT,
                       plug.PlugOptions(hook=True))
    assert Plan.from_dict(p.to_dict()) == p
