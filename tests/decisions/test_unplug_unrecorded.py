"""plan_unplug_unrecorded: what an unplug without a journal changes, given
what the host layer found of the port (PortTraces)."""

from __future__ import annotations

from smartnic_vif.decisions import plug
from smartnic_vif.decisions.plan import Plan
from tests.decisions.hosts import SMARTNIC_PF, mixed_host

INVENTORY = mixed_host()
VF = INVENTORY.pf(SMARTNIC_PF).vfs[5]
assert VF.representor is not None
HOME = VF.representor.name
PORT_ID = "11111111-2222-3333-4444-555555555555"
PORT_NAME = ("tap" + PORT_ID)[:14]
MAC = "fa:16:3e:00:00:05"
SOCKET = "/run/vhu/vhu11111111-22"


def traces(**changes: object) -> plug.PortTraces:
    values: dict[str, object] = dict(
        port_id=PORT_ID, vf_address=VF.address, mac=MAC, port_names=(PORT_NAME,),
        representor=HOME, representor_home=HOME, vf_mac=MAC, vf_driver="nfp",
        pf_driver="nfp")
    values.update(changes)
    return plug.PortTraces(**values)  # type: ignore[arg-type]


def ops(p: Plan) -> list[tuple[str, dict[str, object]]]:
    return [(s.do.name, s.do.args) for s in p.steps]


def test_a_vf_that_a_journalled_unplug_restored_is_left_alone() -> None:
    # The second source unplug of Nova's live migration of a direct port: the
    # first restored the VF, whose MAC before the plug was the port's own.
    # Nothing on the host says the port is on the VF any more.
    for mode in (plug.PASSTHROUGH, plug.FORWARDER):
        p = plug.plan_unplug_unrecorded(traces(vf_driver="vfio-pci"), INVENTORY,
                                        plug.PlugOptions(), mode)
        assert ops(p) == []


def test_a_port_still_on_ovs_gets_its_vf_mac_cleared_and_its_representor_back() -> None:
    p = plug.plan_unplug_unrecorded(
        traces(ovs_ports=(PORT_NAME,), representor=PORT_NAME,
               port_names=(PORT_NAME,)), INVENTORY, plug.PlugOptions(), plug.PASSTHROUGH)
    assert ops(p) == [
        ("ovs_delete_port", {"port": PORT_NAME}),
        ("set_vf", {"pf_address": VF.pf_address, "vf_index": VF.index,
                    "settings": {"mac": plug.ZERO_MAC}}),
        ("configure_link", {"ifname": PORT_NAME, "new_name": HOME}),
    ]


def test_a_port_on_ovs_under_the_kernels_name_is_the_ports_too() -> None:
    p = plug.plan_unplug_unrecorded(
        traces(ovs_ports=(HOME,), port_names=(PORT_NAME, HOME)), INVENTORY,
        plug.PlugOptions(), plug.PASSTHROUGH)
    assert [name for name, _ in ops(p)] == ["ovs_delete_port", "set_vf"]


def test_a_relayed_forwarder_vf_is_cleared_and_given_back_to_its_pf_driver() -> None:
    p = plug.plan_unplug_unrecorded(traces(relay_path=SOCKET, vf_driver="vfio-pci"),
                                    INVENTORY, plug.PlugOptions(), plug.FORWARDER)
    assert [name for name, _ in ops(p)] == ["forwarder_remove", "set_vf", "bind_driver"]
    assert ops(p)[2][1] == {"address": VF.address, "driver": "nfp"}


def test_a_vf_carrying_another_mac_keeps_it_though_the_port_is_on_it() -> None:
    p = plug.plan_unplug_unrecorded(
        traces(ovs_ports=(PORT_NAME,), representor=PORT_NAME, vf_mac="fa:16:3e:00:00:99"),
        INVENTORY, plug.PlugOptions(), plug.PASSTHROUGH)
    assert [name for name, _ in ops(p)] == ["ovs_delete_port", "configure_link"]
