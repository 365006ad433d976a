"""VIFs made by real upstream Nova, plugged and unplugged by this plugin.

The path is nova-compute's: Neutron port and network dicts (what the Neutron
API returns once a port is bound) go through Nova's own
``API._build_vif_model`` into a ``nova.network.model.VIF``, through
``nova.network.os_vif_util.nova_to_osvif_vif`` into an os-vif object, and
through ``os_vif.plug`` to the plugin os-vif loaded for ``vif.plugin``. Unplug
uses a VIF rebuilt from the JSON of the instance's network info cache, as Nova
does when it deletes the instance. The simulated host must end as it began.
"""

from __future__ import annotations

import itertools
import os
import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import nova.context
import nova.objects
import os_vif
import pytest
from nova.network import model as nova_model
from nova.network import os_vif_util
from os_vif import objects as osv
from pyroute2 import IPRoute

from smartnic_vif.model.inventory import VirtualFunction
from tests.fixtures.plugin import PluginEnv
from tests.interop.conftest import FakeNeutron

pytestmark = pytest.mark.root

TENANT = "3d9b8a0e5f1c4c5e9f7a2b6c1d0e8f4a"
NETWORK_ID = "5b2f1e63-0d3c-4a8e-9b6d-7f2a1c3e4d5b"
SUBNET_ID = "9c1d2e3f-4a5b-4c6d-8e7f-0a1b2c3d4e5f"
NET_MTU = 1450
_MAC_PREFIX = secrets.randbelow(256)
_macs = itertools.count(1)

NETWORK = {
    "id": NETWORK_ID, "name": "private", "tenant_id": TENANT, "mtu": NET_MTU,
    "provider:network_type": "vxlan", "provider:physical_network": None,
}
SUBNET = {
    "id": SUBNET_ID, "network_id": NETWORK_ID, "cidr": "10.0.0.0/24",
    "gateway_ip": "10.0.0.1", "enable_dhcp": True, "dns_nameservers": ["10.0.0.2"],
    "host_routes": [],
}
DHCP_PORT = {
    "id": "0d6b0a4e-1c2f-4e3a-9b8c-7d6e5f4a3b2c", "network_id": NETWORK_ID,
    "device_owner": "network:dhcp",
    "fixed_ips": [{"subnet_id": SUBNET_ID, "ip_address": "10.0.0.2"}],
}


def binding_profile(vf: VirtualFunction) -> dict[str, Any]:
    """The binding:profile Nova writes for a port whose PCI claim is ``vf``."""
    return {
        "pci_vendor_info": f"{vf.vendor_id}:{vf.product_id}",
        "pci_slot": vf.address,
        "physical_network": None,
        "capabilities": ["switchdev"],
        "vf_num": vf.index,
    }


def neutron_port(vf: VirtualFunction, vif_type: str, vnic_type: str,
                 details: dict[str, Any], instance_uuid: str,
                 host: str = "compute-1") -> dict[str, Any]:
    """A bound port as Neutron returns it after Nova wrote the PCI claim into
    binding:profile."""
    n = next(_macs)
    return {
        "id": str(uuid.uuid4()),
        "network_id": NETWORK_ID,
        "tenant_id": TENANT,
        "mac_address": f"fa:16:3e:{_MAC_PREFIX:02x}:{n >> 8 & 0xFF:02x}:{n & 0xFF:02x}",
        "admin_state_up": True,
        "status": "DOWN",
        "device_id": instance_uuid,
        "device_owner": "compute:nova",
        "fixed_ips": [{"subnet_id": SUBNET_ID, "ip_address": f"10.0.0.{10 + n % 200}"}],
        "binding:host_id": host,
        "binding:vnic_type": vnic_type,
        "binding:vif_type": vif_type,
        "binding:vif_details": details,
        "binding:profile": binding_profile(vf),
    }


def devname(port: dict[str, Any]) -> str:
    return ("tap" + port["id"])[:nova_model.NIC_NAME_LEN]


@pytest.fixture
def env(plugin_env: PluginEnv) -> Iterator[PluginEnv]:
    before = plugin_env.snapshot()
    yield plugin_env
    assert plugin_env.snapshot() == before, "the test left the simulated host changed"


@pytest.fixture
def instance() -> Any:
    inst = nova.objects.Instance(
        id=4242, uuid=str(uuid.uuid4()), project_id=TENANT, user_id="demo",
        display_name="vm1",
    )
    return inst


class NovaCompute:
    """The parts of nova-compute between Neutron and os-vif."""

    def __init__(self, nova_neutron_api: Any, instance: Any) -> None:
        self.api, self._install = nova_neutron_api
        self.instance = instance
        self.context = nova.context.get_admin_context()

    def vif_model(self, port: dict[str, Any]) -> nova_model.VIF:
        fake = self._install(FakeNeutron([NETWORK], [SUBNET], [DHCP_PORT, port]))
        return self.api._build_vif_model(self.context, fake, port, [NETWORK], [])

    def osvif_instance(self) -> Any:
        return os_vif_util.nova_to_osvif_instance(self.instance)

    @staticmethod
    def from_info_cache(vif: nova_model.VIF) -> nova_model.VIF:
        """The VIF as Nova reads it back from instance_info_caches."""
        cached = nova_model.NetworkInfo([vif]).json()
        return nova_model.NetworkInfo.hydrate(cached)[0]


@pytest.fixture
def compute(nova_neutron_api: Any, instance: Any) -> NovaCompute:
    return NovaCompute(nova_neutron_api, instance)


def assert_plugged(env: PluginEnv, port: dict[str, Any], vf: VirtualFunction,
                   instance_uuid: str, mode: str) -> None:
    name = devname(port)
    ports = env.ovs.find_ports_by_iface_id(port["id"])
    assert [(p.name, p.bridge) for p in ports] == [(name, "br-int")]
    assert ports[0].external_ids == {
        "iface-id": port["id"],
        "iface-status": "active",
        "attached-mac": port["mac_address"],
        "vm-uuid": instance_uuid,
    }
    assert ports[0].mtu_request == NET_MTU
    # Nova's representor_name (the devname) is honoured: the representor is
    # renamed, carries the network MTU and is up.
    assert vf.representor is not None
    with IPRoute() as ipr:
        assert ipr.link_lookup(ifname=vf.representor.name) == []
        (msg,) = ipr.get_links(ifname=name)
    assert (msg.get_attr("IFLA_MTU"), bool(msg["flags"] & 1)) == (NET_MTU, True)
    assert env.vf_settings(vf.address)["mac"] == port["mac_address"]
    assert env.vf_driver(vf.address) == ("vfio-pci" if mode == "forwarder" else "nfp")


def plug_and_unplug(env: PluginEnv, compute: NovaCompute, vif: nova_model.VIF,
                    osvif_vif: Any, port: dict[str, Any], vf: VirtualFunction,
                    mode: str, plugin: str | None = None) -> None:
    info = compute.osvif_instance()
    assert info.uuid == compute.instance.uuid
    os_vif.plug(osvif_vif, info)
    try:
        assert_plugged(env, port, vf, compute.instance.uuid, mode)
        if mode == "forwarder":
            assert env.relay_pairs() == [(vf.address, osvif_vif.path)]
    finally:
        cached = os_vif_util.nova_to_osvif_vif(compute.from_info_cache(vif))
        if plugin is not None:
            cached.plugin = plugin
        os_vif.unplug(cached, info)


def test_agilio_ovs_direct(env: PluginEnv, compute: NovaCompute) -> None:
    vf = env.vf(0, 11)
    port = neutron_port(vf, "agilio_ovs", "direct", {
        "port_filter": False, "ovs_hybrid_plug": False, "bridge_name": "br-int",
        "datapath_type": "netdev", "connectivity": "l2",
    }, compute.instance.uuid)
    vif = compute.vif_model(port)

    osvif_vif = os_vif_util.nova_to_osvif_vif(vif)

    assert isinstance(osvif_vif, osv.vif.VIFHostDevice)
    assert osvif_vif.plugin == "agilio_ovs"
    assert osvif_vif.dev_address == vf.address
    assert isinstance(osvif_vif.port_profile, osv.vif.VIFPortProfileOVSRepresentor)
    assert osvif_vif.port_profile.datapath_offload.representor_name == devname(port)
    assert osvif_vif.network.mtu == NET_MTU
    plug_and_unplug(env, compute, vif, osvif_vif, port, vf, "passthrough")


def test_agilio_ovs_virtio_forwarder(env: PluginEnv, compute: NovaCompute) -> None:
    vf = env.vf(1, 12)
    port_id = str(uuid.uuid4())
    socket = os.path.join(env.sim.layout.vhost_dir, ("vhu" + port_id)[:14])
    port = neutron_port(vf, "agilio_ovs", "virtio-forwarder", {
        "vhostuser_socket": socket, "vhostuser_mode": "server", "vhostuser_ovs_plug": True,
        "port_filter": False, "ovs_hybrid_plug": False, "bridge_name": "br-int",
        "datapath_type": "netdev",
    }, compute.instance.uuid)
    port["id"] = port_id
    vif = compute.vif_model(port)

    osvif_vif = os_vif_util.nova_to_osvif_vif(vif)

    assert isinstance(osvif_vif, osv.vif.VIFVHostUser)
    assert osvif_vif.plugin == "agilio_ovs"
    assert (osvif_vif.path, osvif_vif.mode) == (socket, "server")
    assert osvif_vif.vif_name == devname(port)
    assert osvif_vif.port_profile.representor_address == vf.address
    plug_and_unplug(env, compute, vif, osvif_vif, port, vf, "forwarder")
    assert env.relay_pairs() == []


def test_ovs_direct_handed_to_this_plugin(env: PluginEnv, compute: NovaCompute) -> None:
    """vif_type ``ovs`` with vnic ``direct`` (the stock ML2 OVS driver's answer
    for a switchdev VF): Nova names os-vif's stock ``ovs`` plugin, which only
    looks the representor up and plugs it (no rename, no VF MAC, no claim).
    A deployment that wants this plugin for such ports re-targets
    ``vif.plugin`` to ``smartnic``, as done here; the object is otherwise
    exactly what Nova built."""
    vf = env.vf(0, 12)
    port = neutron_port(vf, "ovs", "direct", {
        "port_filter": True, "ovs_hybrid_plug": False, "bridge_name": "br-int",
        "datapath_type": "system", "connectivity": "l2",
    }, compute.instance.uuid)
    vif = compute.vif_model(port)

    osvif_vif = os_vif_util.nova_to_osvif_vif(vif)

    assert isinstance(osvif_vif, osv.vif.VIFHostDevice)
    assert osvif_vif.plugin == "ovs"
    osvif_vif.plugin = "smartnic"
    plug_and_unplug(env, compute, vif, osvif_vif, port, vf, "passthrough", plugin="smartnic")
    # The existing br-int keeps its datapath_type although Neutron said system.
    assert env.ovs.bridge_datapath_type("br-int") == "netdev"


def test_agilio_ovs_normal_falls_through_to_the_stock_plugin(compute: NovaCompute,
                                                             plugin_env: PluginEnv) -> None:
    """Documents the upstream boundary: vnic normal on an agilio_ovs port is
    an ``ovs`` VIF for Nova, never sent to this plugin."""
    port = neutron_port(plugin_env.vf(0, 0), "agilio_ovs", "normal", {
        "port_filter": True, "ovs_hybrid_plug": False, "bridge_name": "br-int",
    }, compute.instance.uuid)
    osvif_vif = os_vif_util.nova_to_osvif_vif(compute.vif_model(port))
    assert isinstance(osvif_vif, osv.vif.VIFOpenVSwitch)
    assert osvif_vif.plugin == "ovs"
