"""os-vif VIFs: the upstream mode against Nova's own conversion, and our mode.

Nova builds its network model from the Neutron port (``_build_vif_model``, with
its Neutron client faked) and converts it (``nova_to_osvif_vif``); the library
builds from the same port, network and subnet dicts. The two primitives must be
identical.
"""

from __future__ import annotations

import copy
import itertools
import warnings
from typing import Any

import pytest
from nova.network import neutron as nova_neutron
from nova.network import os_vif_util
from os_vif.objects import vif as osv_vif

from smartnic_vif.decisions.vif_builder import (
    build_network,
    build_vif,
    devname_for_port,
    instance_info,
)
from smartnic_vif.model.errors import InvalidValue, UnsupportedVnicType
from smartnic_vif.osvif.objects import VIFPortProfileForwarder, VIFPortProfilePassthrough
from tests.decisions.hosts import mixed_host
from tests.decisions.novaref import FakeNeutronClient, normalise_primitive

NET_ID = "44444444-0000-4000-8000-000000000001"
NETWORK = {
    "id": NET_ID,
    "name": "tenant-net",
    "tenant_id": "project",
    "mtu": 1450,
    "provider:network_type": "vlan",
    "provider:physical_network": "physnet1",
}
SUBNETS = [
    {
        "id": "55555555-0000-4000-8000-000000000001",
        "network_id": NET_ID,
        "cidr": "10.0.0.0/24",
        "gateway_ip": "10.0.0.1",
        "dns_nameservers": ["10.0.0.2", "8.8.8.8"],
        "host_routes": [{"destination": "192.168.0.0/16", "nexthop": "10.0.0.254"}],
        "enable_dhcp": True,
    },
    {
        "id": "55555555-0000-4000-8000-000000000002",
        "network_id": NET_ID,
        "cidr": "fd00::/64",
        "gateway_ip": None,
        "dns_nameservers": [],
        "host_routes": [],
        "ipv6_address_mode": "slaac",
    },
    {  # on the network but not the port's: must not appear
        "id": "55555555-0000-4000-8000-000000000003",
        "network_id": NET_ID,
        "cidr": "172.16.0.0/24",
        "gateway_ip": "172.16.0.1",
    },
]
VF = "0000:05:08.3"
SOCKET = "/var/lib/vhost_sockets/vhu66666666-00"

_ids = (f"66666666-0000-4000-8000-{n:012d}" for n in itertools.count(1))


def make_port(
    vnic: str,
    vif_type: str = "agilio_ovs",
    details: dict[str, Any] | None = None,
    *,
    status: str = "ACTIVE",
    admin_state_up: bool = True,
    profile: dict[str, Any] | None = None,
    fixed_ips: bool = True,
) -> dict[str, Any]:
    if details is None:
        details = {"port_filter": False, "ovs_hybrid_plug": False, "bridge_name": "br-int",
                   "datapath_type": "system"}
        if vnic == "virtio-forwarder":
            details.update(vhostuser_socket=SOCKET, vhostuser_mode="server",
                           vhostuser_ovs_plug=True)
    if profile is None:
        profile = {"pci_slot": VF, "pci_vendor_info": "19ee:6003", "physical_network":
                   "physnet1"} if vnic != "normal" else {}
    return {
        "id": next(_ids),
        "network_id": NET_ID,
        "tenant_id": "project",
        "mac_address": "FA:16:3E:AA:BB:CC",
        "admin_state_up": admin_state_up,
        "status": status,
        "binding:vnic_type": vnic,
        "binding:vif_type": vif_type,
        "binding:vif_details": details,
        "binding:profile": profile,
        "fixed_ips": [
            {"subnet_id": SUBNETS[0]["id"], "ip_address": "10.0.0.5"},
            {"subnet_id": SUBNETS[1]["id"], "ip_address": "fd00::5"},
        ] if fixed_ips else [],
    }


def nova_vif(
    client: FakeNeutronClient, ctx: Any, port: dict[str, Any], preexisting: bool = False
) -> Any:
    client.networks = {NET_ID: NETWORK}
    client.subnets = SUBNETS
    model = nova_neutron.API()._build_vif_model(
        ctx, client, copy.deepcopy(port), [NETWORK], [port["id"]] if preexisting else []
    )
    return os_vif_util.nova_to_osvif_vif(model)


CASES = {
    # agilio_ovs: what Nova's agilio conversion emits
    "agilio direct": dict(vnic="direct"),
    "agilio forwarder": dict(vnic="virtio-forwarder"),
    "agilio forwarder client": dict(vnic="virtio-forwarder", details={
        "vhostuser_socket": SOCKET, "vhostuser_mode": "client", "bridge_name": "br-smartnic0123",
        "port_filter": True}),
    "agilio forwarder default mode": dict(vnic="virtio-forwarder", details={
        "vhostuser_socket": SOCKET}),
    "agilio normal (falls through to ovs)": dict(vnic="normal"),
    "agilio normal netdev, create_tap": dict(vnic="normal", details={
        "datapath_type": "netdev", "ovs_create_tap": True, "bridge_name": "br-acc"}),
    "agilio normal hybrid": dict(vnic="normal", details={"ovs_hybrid_plug": True,
                                                          "port_filter": True}),
    "agilio direct down": dict(vnic="direct", status="DOWN"),
    "agilio direct admin down": dict(vnic="direct", status="DOWN", admin_state_up=False),
    "agilio direct no ips": dict(vnic="direct", fixed_ips=False),
    "agilio direct empty details": dict(vnic="direct", details={}),
    # ovs: the stock OVS driver's hardware-offload binding
    "ovs direct": dict(vnic="direct", vif_type="ovs"),
    "ovs normal": dict(vnic="normal", vif_type="ovs"),
}


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("preexisting", [False, True])
def test_upstream_mode_is_exactly_novas(
    case: str, preexisting: bool, fake_neutron: FakeNeutronClient, nova_ctx: Any
) -> None:
    port = make_port(**CASES[case])
    theirs = nova_vif(fake_neutron, nova_ctx, port, preexisting)
    ours = build_vif(port, network=NETWORK, subnets=SUBNETS, preserve_on_delete=preexisting,
                     upstream=True)
    assert type(ours) is type(theirs)
    assert normalise_primitive(ours.obj_to_primitive()) == normalise_primitive(
        theirs.obj_to_primitive()
    )


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_upstream_values_worth_naming(fake_neutron: FakeNeutronClient, nova_ctx: Any) -> None:
    port = make_port("virtio-forwarder")
    vif = build_vif(port, network=NETWORK, subnets=SUBNETS, upstream=True)
    assert isinstance(vif, osv_vif.VIFVHostUser)
    assert vif.plugin == "agilio_ovs" and vif.path == SOCKET and vif.mode == "server"
    assert vif.vif_name == devname_for_port(port["id"]) == ("tap" + port["id"])[:14]
    profile = vif.port_profile
    assert isinstance(profile, osv_vif.VIFPortProfileOVSRepresentor)
    assert (profile.representor_name, profile.representor_address) == (vif.vif_name, VF)
    assert profile.datapath_offload.representor_address == VF
    assert vif.network.bridge == "br-int" and vif.network.mtu == 1450
    assert [str(s.cidr) for s in vif.network.subnets.objects] == ["10.0.0.0/24", "fd00::/64"]
    assert vif.address == "fa:16:3e:aa:bb:cc"
    # The comparison above is not vacuous: Nova's own output has the same.
    theirs = nova_vif(fake_neutron, nova_ctx, port)
    assert theirs.port_profile.representor_address == VF and theirs.path == SOCKET


def test_our_passthrough_vif() -> None:
    vf = next(v for v in mixed_host().vfs() if v.address == VF)
    port = make_port("direct", profile={"trusted": "true"})
    port["port_security_enabled"] = False
    vif = build_vif(port, network=NETWORK, vf=vf)
    assert isinstance(vif, osv_vif.VIFHostDevice) and vif.plugin == "smartnic"
    assert vif.dev_type == "ethernet" and vif.dev_address == VF
    profile = vif.port_profile
    assert isinstance(profile, VIFPortProfilePassthrough)
    assert profile.interface_id == port["id"] and profile.representor_address == VF
    assert profile.representor_name == devname_for_port(port["id"])
    assert profile.trusted is True and profile.spoofchk is False
    assert profile.datapath_offload.representor_address == VF
    assert vif.network.bridge == "br-int" and vif.network.label == "tenant-net"
    assert len(vif.network.subnets.objects) == 0  # no subnets given
    # It serialises and comes back as the same object (registered in os-vif).
    again = osv_vif.VIFBase.obj_from_primitive(vif.obj_to_primitive())
    assert again.port_profile.trusted is True and again.dev_address == VF


def test_our_forwarder_vif() -> None:
    port = make_port("virtio-forwarder", details={"vhostuser_socket": SOCKET,
                                                  "bridge_name": "br-acc"}, profile={})
    vf = next(v for v in mixed_host().vfs() if v.address == "0000:05:09.0")
    vif = build_vif(port, vf=vf, devname="vhu-custom0")
    assert isinstance(vif, osv_vif.VIFVHostUser) and vif.plugin == "smartnic"
    assert vif.mode == "server" and vif.path == SOCKET and vif.vif_name == "vhu-custom0"
    profile = vif.port_profile
    assert isinstance(profile, VIFPortProfileForwarder)
    assert profile.representor_address == "0000:05:09.0" and profile.relay_driver is None
    assert profile.trusted is False and profile.spoofchk is True
    assert vif.network.bridge == "br-acc" and "mtu" in vif.network and vif.network.mtu is None


def test_our_normal_vifs() -> None:
    port = make_port("normal")
    vif = build_vif(port, network=NETWORK)
    assert isinstance(vif, osv_vif.VIFOpenVSwitch) and vif.plugin == "smartnic"
    assert vif.port_profile.create_port is True and vif.bridge_name == "br-int"
    libvirt_port = build_vif(port, network=NETWORK, delegate_create=False)
    assert libvirt_port.port_profile.create_port is False
    hybrid = build_vif(make_port("normal", details={"ovs_hybrid_plug": True}))
    assert isinstance(hybrid, osv_vif.VIFBridge)
    assert hybrid.bridge_name.startswith("qbr") and len(hybrid.bridge_name) == 14


def test_vf_and_nova_claim_must_agree() -> None:
    vf = next(v for v in mixed_host().vfs() if v.address == "0000:05:08.4")
    with pytest.raises(InvalidValue, match="differs from the chosen VF 0000:05:08.4"):
        build_vif(make_port("direct"), vf=vf)
    # pci_slot in another spelling is the same VF
    port = make_port("direct", profile={"pci_slot": "0000:05:08.4".upper()})
    assert build_vif(port, vf=vf).dev_address == "0000:05:08.4"


def test_network_with_subnets() -> None:
    net = build_network(make_port("direct"), NETWORK, SUBNETS, bridge="br-int")
    first, second = net.subnets.objects
    assert [str(ip.address) for ip in first.ips.objects] == ["10.0.0.5"]
    assert [str(ip.address) for ip in second.ips.objects] == ["fd00::5"]
    assert str(first.gateway) == "10.0.0.1" and "gateway" not in second
    assert [str(r.cidr) for r in first.routes.objects] == ["192.168.0.0/16"]


def test_instance_info() -> None:
    info = instance_info("77777777-0000-4000-8000-000000000001", "vm1", "project")
    assert (info.uuid, info.name, info.project_id) == (
        "77777777-0000-4000-8000-000000000001", "vm1", "project")
    assert "project_id" not in instance_info("77777777-0000-4000-8000-000000000001", "vm1")
    with pytest.raises(InvalidValue, match="instance uuid"):
        instance_info("vm1", "vm1")


class TestBadInput:
    def _fails(self, port: dict[str, Any], field: str, **kw: Any) -> InvalidValue:
        with pytest.raises(InvalidValue) as exc:
            build_vif(port, **kw)
        assert field in exc.value.field, exc.value
        return exc.value

    def test_missing_binding_details(self) -> None:
        port = make_port("direct")
        del port["binding:vif_details"]
        err = self._fails(port, "binding:vif_details")
        assert port["id"] in str(err)

    @pytest.mark.parametrize("vif_type", ["unbound", "binding_failed", None])
    def test_unbound_port(self, vif_type: str | None) -> None:
        port = make_port("direct")
        port["binding:vif_type"] = vif_type
        self._fails(port, "binding:vif_type")

    @pytest.mark.parametrize("mac", ["fa:16:3e:aa:bb", "zz:16:3e:aa:bb:cc", None,
                                     "01:00:5e:00:00:01", "fa:16:3e:aa:bb:cc\n<x>"])
    def test_bad_mac(self, mac: str | None) -> None:
        port = make_port("direct")
        port["mac_address"] = mac
        self._fails(port, "mac_address")

    def test_forwarder_without_socket(self) -> None:
        port = make_port("virtio-forwarder", details={"vhostuser_mode": "server"})
        self._fails(port, "vhostuser_socket")
        port = make_port("virtio-forwarder", details={"vhostuser_socket": "relative/sock"})
        self._fails(port, "vhostuser_socket")
        port = make_port("virtio-forwarder", details={"vhostuser_socket": SOCKET,
                                                      "vhostuser_mode": "both"})
        self._fails(port, "vhostuser_mode")

    @pytest.mark.parametrize("slot", [None, "0000:05:08", "0000:05:08.9", "garbage"])
    def test_passthrough_without_a_valid_vf(self, slot: str | None) -> None:
        port = make_port("direct", profile={} if slot is None else {"pci_slot": slot})
        self._fails(port, "pci_slot")

    def test_bad_ids_and_bridge(self) -> None:
        port = make_port("normal")
        port["id"] = "not-a-uuid"
        self._fails(port, "port id")
        port = make_port("normal")
        port["network_id"] = None
        self._fails(port, "network_id")
        self._fails(make_port("normal", details={"bridge_name": "br int"}), "bridge_name")
        self._fails(make_port("normal"), "devname", devname="x" * 16)
        net = dict(NETWORK, mtu=10)
        self._fails(make_port("normal"), "mtu", network=net)

    @pytest.mark.parametrize("vnic", ["macvtap", "vdpa", "remote-managed", "sriov"])
    def test_unsupported_vnic_types(self, vnic: str) -> None:
        port = make_port(vnic)
        with pytest.raises(UnsupportedVnicType, match=port["id"]):
            build_vif(port)
        with pytest.raises(UnsupportedVnicType):
            build_vif(port, upstream=True)

    def test_upstream_refuses_what_nova_would_get_wrong(self) -> None:
        self._fails(make_port("virtio-forwarder", vif_type="ovs"), "binding:vif_type",
                    upstream=True)
        self._fails(make_port("direct", vif_type="vhostuser"), "binding:vif_type",
                    upstream=True)

    def test_not_a_dict(self) -> None:
        with pytest.raises(InvalidValue, match="port"):
            build_vif(["id"])  # type: ignore[arg-type]


def test_no_warning_leaks_from_upstream_mode() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", PendingDeprecationWarning)
        build_vif(make_port("direct"), upstream=True)
