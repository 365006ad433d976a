"""smartnic_ovs inside Neutron's real ML2 plugin, driven through the REST API,
and the bound ports handed to the real Nova that builds the guest's interface.

Neutron: its own ``Ml2PluginV2TestCase`` (the ``NeutronDbPluginV2TestCase``
family from the installed wheel) with ``[ml2] mechanism_drivers = smartnic_ovs``
loaded through the ``neutron.ml2.mechanism_drivers`` entry point, a SQLite
database, OVS agents registered as the agents themselves report, VLAN and VXLAN
provider networks, and every request a WSGI request with a Keystone-like
context (member, admin or service role), as Nova makes them.

Nova: the port and network dicts the REST API returned go through Nova 34's
``API._build_vif_model``, ``os_vif_util.nova_to_osvif_vif`` and
``LibvirtGenericVIFDriver.get_config`` with real ``Instance``, ``Flavor`` and
``ImageMeta`` objects; only Nova's Neutron client is replaced
(``tests/upstream_nova.FakeNeutron``, answering from those dicts). Each
``<interface>`` is checked by libvirt's ``virt-xml-validate``.
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from typing import Any
from unittest import mock

import nova.context
from neutron.conf.plugins.ml2 import config as ml2_config
from neutron.conf.plugins.ml2.drivers import driver_type
from neutron.tests.common import helpers
from neutron.tests.unit.plugins.ml2 import test_plugin
from neutron_lib import constants
from neutron_lib.api.definitions import portbindings
from nova import objects as nova_objects
from nova.network import model as nova_model
from nova.network import neutron as nova_neutron
from nova.network import os_vif_util
from nova.virt import hardware
from nova.virt.libvirt import config as libvirt_config
from nova.virt.libvirt import vif as libvirt_vif
from os_vif.objects import vif as osv_vif
from oslo_config import cfg

from smartnic_vif.neutron import config
from smartnic_vif.neutron.mech_driver import SmartNICOVSMechanismDriver
from tests.libvirt_schema import domain_xml, validate
from tests.upstream_nova import FakeNeutron

SMARTNIC_HOST = "compute-sn-1"
SMARTNIC_HOST_2 = "compute-sn-2"
CLASSIC_HOST = "compute-1"
NOVA_OWNER = constants.DEVICE_OWNER_COMPUTE_PREFIX + "nova"

# What Nova writes into binding:profile for a PCI port: the VF it claimed and,
# when the VF's PF is in switchdev mode, the "switchdev" capability.
SWITCHDEV_VF = {
    "pci_vendor_info": "19ee:6003", "pci_slot": "0000:05:08.1",
    "physical_network": None, "capabilities": ["switchdev"], "vf_num": 9,
}
SWITCHDEV_VF_2 = {**SWITCHDEV_VF, "pci_slot": "0000:06:08.3", "vf_num": 27}
LEGACY_VF = {"pci_vendor_info": "8086:154c", "pci_slot": "0000:81:10.2",
             "physical_network": "physnet1", "capabilities": [], "vf_num": 2}

# What neutron-openvswitch-agent reports in its state (its own keys, native
# firewall, kernel datapath). Nothing in it says "SmartNIC": smartnic_ovs knows
# SmartNIC hosts by [smartnic_ovs] smartnic_hosts or an agent extension.
AGENT_CONFIGURATIONS: dict[str, Any] = {
    "bridge_mappings": {"physnet1": "br-ex"},
    "integration_bridge": "br-int",
    "tunnel_types": ["vxlan"],
    "tunneling_ip": "192.0.2.10",
    "datapath_type": "system",
    "ovs_capabilities": {"datapath_types": ["system", "netdev"], "iface_types": ["system"]},
    "vhostuser_socket_dir": "/var/run/openvswitch",
    portbindings.OVS_HYBRID_PLUG: False,
    "baremetal_smartnic": False,
    "extensions": ["qos"],
}

BOUND_BY_US = {"bound_drivers": {"0": "smartnic_ovs"}}
# The stock OVS driver's details for a normal port (native firewall, kernel
# datapath, Neutron 29's [OVS_DRIVER] ovs_create_tap default).
OVS_NORMAL = {
    "connectivity": "l2", "port_filter": True, "ovs_hybrid_plug": False,
    "ovs_create_tap": True, "datapath_type": "system", "bridge_name": "br-int", **BOUND_BY_US,
}
# The same for a switchdev direct port: no tap (the VF is the guest's NIC).
OVS_DIRECT = {key: value for key, value in OVS_NORMAL.items() if key != "ovs_create_tap"}


def forwarder_details(port_id: str) -> dict[str, Any]:
    """smartnic_ovs's vif_details for a virtio-forwarder port: the socket is
    in [smartnic_ovs] vhostuser_socket_dir, not the agent's own directory."""
    return {
        "connectivity": "l2", "port_filter": False, "ovs_hybrid_plug": False,
        "vhostuser_mode": "server", "vhostuser_ovs_plug": True,
        "vhostuser_socket": f"/var/lib/vhost_sockets/vhu{port_id[:11]}",
        "datapath_type": "system", "bridge_name": "br-int", **BOUND_BY_US,
    }


def binding_resource(details: dict[str, Any]) -> dict[str, Any]:
    """The same details as shown by GET/POST .../bindings: ML2 adds
    ``bound_drivers`` to the port's binding:vif_details only."""
    return {key: value for key, value in details.items() if key != "bound_drivers"}


FAILED = (portbindings.VIF_TYPE_BINDING_FAILED, {})

# vnic type, binding:profile -> (vif_type, vif_details) on a SmartNIC host and
# on a classic host. None stands for forwarder_details(port id).
MATRIX: list[tuple[str, dict[str, Any] | None, Any, Any]] = [
    ("normal", None, ("ovs", OVS_NORMAL), ("ovs", OVS_NORMAL)),
    ("direct", SWITCHDEV_VF, ("agilio_ovs", OVS_DIRECT), ("ovs", OVS_DIRECT)),
    # Without a representor the VF is the SR-IOV agent's, not OVS's.
    ("direct", LEGACY_VF, FAILED, FAILED),
    ("virtio-forwarder", SWITCHDEV_VF, ("agilio_ovs", None), FAILED),
    # The stock driver's answer for vdpa (tap details included) is kept as is.
    ("vdpa", SWITCHDEV_VF, ("ovs", OVS_NORMAL), ("ovs", OVS_NORMAL)),
    # smart-nic is for an OVS agent on an Ironic DPU (baremetal_smartnic).
    ("smart-nic", None, FAILED, FAILED),
    ("macvtap", LEGACY_VF, FAILED, FAILED),
    ("direct-physical", {"pci_slot": "0000:05:00.0"}, FAILED, FAILED),
    ("baremetal", None, FAILED, FAILED),
    ("remote-managed", SWITCHDEV_VF, FAILED, FAILED),
    ("accelerator-direct", None, FAILED, FAILED),
    ("accelerator-direct-physical", None, FAILED, FAILED),
]  # fmt: skip


class Ml2RestTestCase(test_plugin.Ml2PluginV2TestCase):
    """Neutron's ML2 plugin test base with only smartnic_ovs loaded."""

    _mechanism_drivers = ["smartnic_ovs"]

    def setUp(self) -> None:
        # Registered per test: tests/neutron/conftest.py gives each test its
        # own option registry.
        ml2_config.register_ml2_plugin_opts()
        driver_type.register_ml2_drivers_vlan_opts()
        driver_type.register_ml2_drivers_vxlan_opts()
        cfg.CONF.set_override("type_drivers", ["vlan", "vxlan"], "ml2")
        cfg.CONF.set_override("project_network_types", ["vxlan"], "ml2")
        cfg.CONF.set_override("vni_ranges", ["1000:1999"], "ml2_type_vxlan")
        # The OVS agent's native firewall, as the agent configuration says.
        cfg.CONF.set_override("firewall_driver", "openvswitch", "SECURITYGROUP")
        super().setUp()  # Ml2PluginV2TestCase: network_vlan_ranges physnet1:1:100, ...
        # No Nova to tell about port changes (the base turns off the status
        # events only); a notifier thread would outlive the test otherwise.
        cfg.CONF.set_override("notify_nova_on_port_data_changes", False)
        cfg.CONF.set_override("smartnic_hosts", ["compute-sn-*"], group=config.GROUP)
        for host in (SMARTNIC_HOST, SMARTNIC_HOST_2, CLASSIC_HOST):
            self.register_agent(host)
        self.vxlan = self.make_network("private", "vxlan", segmentation_id=1234)
        self.vlan = self.make_network("provider", "vlan", "physnet1", 55)

    # -- what the agents and Nova do, as REST calls -------------------------------
    def register_agent(self, host: str, **configurations: Any) -> None:
        agent = helpers._get_l2_agent_dict(
            host, constants.AGENT_TYPE_OVS, constants.AGENT_PROCESS_OVS
        )
        agent["configurations"] = {**AGENT_CONFIGURATIONS, **configurations}
        helpers._register_agent(agent, self.plugin)

    def make_network(self, name: str, network_type: str, physnet: str | None = None,
                     segmentation_id: int | None = None) -> dict[str, Any]:
        provider = {"provider:network_type": network_type,
                    "provider:segmentation_id": segmentation_id}
        if physnet:
            provider["provider:physical_network"] = physnet
        network = self._make_network(self.fmt, name, True, as_admin=True,
                                     arg_list=tuple(provider), **provider)
        prefix = f"10.{network_type == 'vlan':d}.{segmentation_id % 250}"
        self._make_subnet(self.fmt, network, f"{prefix}.1", f"{prefix}.0/24")
        return dict(self._show("networks", network["network"]["id"], as_admin=True)["network"])

    def create_port(self, network: dict[str, Any], vnic_type: str) -> dict[str, Any]:
        """A project member's port for a server (Nova creates it the same way)."""
        port = self._make_port(self.fmt, network["id"], device_owner=NOVA_OWNER,
                               device_id=str(uuid.uuid4()),
                               arg_list=(portbindings.VNIC_TYPE,),
                               **{portbindings.VNIC_TYPE: vnic_type})
        return dict(port["port"])

    def update_port(self, port_id: str, changes: dict[str, Any], role: str = "service") -> Any:
        request = self.new_update_request("ports", {"port": changes}, port_id,
                                          as_admin=role == "admin",
                                          as_service=role == "service")
        return request.get_response(self.api)

    def bind(self, port_id: str, host: str, profile: dict[str, Any] | None) -> dict[str, Any]:
        """What nova-compute does when it builds the server: host and PCI claim."""
        changes: dict[str, Any] = {portbindings.HOST_ID: host}
        if profile is not None:
            changes[portbindings.PROFILE] = profile
        response = self.update_port(port_id, changes)
        self._check_http_response(response, 200)
        return dict(self.deserialize(self.fmt, response)["port"])

    def bound_port(self, network: dict[str, Any], vnic_type: str, host: str,
                   profile: dict[str, Any] | None) -> dict[str, Any]:
        return self.bind(self.create_port(network, vnic_type)["id"], host, profile)

    def show_port(self, port_id: str) -> dict[str, Any]:
        """The port as Nova reads it (service role: binding:profile is shown)."""
        response = self._service_req("GET", "ports", id=port_id).get_response(self.api)
        self._check_http_response(response, 200)
        return dict(self.deserialize(self.fmt, response)["port"])

    def subnets(self, network: dict[str, Any]) -> list[dict[str, Any]]:
        return list(self._list("subnets", query_params=f"network_id={network['id']}")["subnets"])

    # -- multiple port bindings (binding-extended), as Nova calls them --------------
    def create_binding(self, port: dict[str, Any], host: str, profile: dict[str, Any]) -> Any:
        # As nova.network.neutron.API.bind_ports_to_host: the port's vnic type
        # goes with it (a binding left without one is a "normal" binding).
        binding = {"host": host, "vnic_type": port[portbindings.VNIC_TYPE], "profile": profile}
        request = self.new_create_request(
            f"ports/{port['id']}/bindings", {"binding": binding}, as_service=True)
        return request.get_response(self.api)

    def activate_binding(self, port_id: str, host: str) -> Any:
        # The body Neutron's own ExtendedPortBindingTestCase sends.
        return self._service_req("PUT", "ports", data={"port_id": port_id}, id=port_id,
                                 subresource="bindings", sub_id=host,
                                 action="activate").get_response(self.api)

    def delete_binding(self, port_id: str, host: str) -> Any:
        return self._service_req("DELETE", "ports", id=port_id, subresource="bindings",
                                 sub_id=host).get_response(self.api)

    def bindings(self, port_id: str) -> dict[str, tuple[str, str]]:
        """host -> (status, vif_type) of every binding of the port."""
        response = self._service_req("GET", "ports", id=port_id,
                                     subresource="bindings").get_response(self.api)
        self._check_http_response(response, 200)
        return {b["host"]: (b["status"], b["vif_type"])
                for b in self.deserialize(self.fmt, response)["bindings"]}

    def assert_binding(self, port: dict[str, Any], expected: Any, label: str) -> None:
        vif_type, details = expected
        if details is None:
            details = forwarder_details(port["id"])
        self.assertEqual(
            (vif_type, details),
            (port[portbindings.VIF_TYPE], port[portbindings.VIF_DETAILS]), label)


class TestDriverAndAgents(Ml2RestTestCase):
    def test_ml2_loads_smartnic_ovs_through_its_entry_point(self) -> None:
        drivers = self.plugin.mechanism_manager.ordered_mech_drivers
        self.assertEqual(["smartnic_ovs"], [d.name for d in drivers])
        self.assertIs(SmartNICOVSMechanismDriver, type(drivers[0].obj))

    def test_agents_of_both_kinds_of_host_are_known(self) -> None:
        agents = self.plugin.get_agents(self.context)
        driver = self.plugin.mechanism_manager.mech_drivers["smartnic_ovs"].obj
        self.assertEqual(
            {SMARTNIC_HOST: True, SMARTNIC_HOST_2: True, CLASSIC_HOST: False},
            {a["host"]: driver.is_smartnic_host(a) for a in agents
             if a["agent_type"] == constants.AGENT_TYPE_OVS and a["alive"]})

    def test_agent_extension_marks_a_smartnic_host(self) -> None:
        cfg.CONF.set_override("smartnic_agent_extension", "smartnic", group=config.GROUP)
        self.register_agent("edge-7", extensions=["qos", "smartnic"])
        port = self.bound_port(self.vxlan, "virtio-forwarder", "edge-7", SWITCHDEV_VF)
        self.assert_binding(port, ("agilio_ovs", None), "forwarder on edge-7")


class TestBindingThroughRest(Ml2RestTestCase):
    def test_matrix_covers_every_vnic_type(self) -> None:
        self.assertEqual(set(portbindings.VNIC_TYPES), {row[0] for row in MATRIX})

    def test_every_vnic_type_on_both_kinds_of_host_vxlan(self) -> None:
        for vnic, profile, on_smartnic, on_classic in MATRIX:
            for host, expected in ((SMARTNIC_HOST, on_smartnic), (CLASSIC_HOST, on_classic)):
                port = self.bound_port(self.vxlan, vnic, host, profile)
                self.assert_binding(port, expected, f"{vnic} {profile} on {host}")
                self.assertEqual(host, port[portbindings.HOST_ID])

    def test_vlan_network(self) -> None:
        for vnic, profile, on_smartnic, on_classic in MATRIX[:4]:
            for host, expected in ((SMARTNIC_HOST, on_smartnic), (CLASSIC_HOST, on_classic)):
                port = self.bound_port(self.vlan, vnic, host, profile)
                self.assert_binding(port, expected, f"{vnic} {profile} on {host} (VLAN)")

    def test_vlan_physnet_the_agent_has_no_bridge_for(self) -> None:
        elsewhere = self.make_network("elsewhere", "vlan", "physnet2", 210)
        for vnic, profile in (("virtio-forwarder", SWITCHDEV_VF), ("direct", SWITCHDEV_VF)):
            port = self.bound_port(elsewhere, vnic, SMARTNIC_HOST, profile)
            self.assert_binding(port, FAILED, f"{vnic} on physnet2")

    def test_failed_binding_is_retried_when_the_host_is_listed(self) -> None:
        port = self.bound_port(self.vxlan, "virtio-forwarder", "compute-9", SWITCHDEV_VF)
        self.assert_binding(port, FAILED, "compute-9 not yet a SmartNIC host")
        self.register_agent("compute-9")
        cfg.CONF.set_override("smartnic_hosts", ["compute-sn-*", "compute-9"],
                              group=config.GROUP)
        # Nova binds again by writing the host again.
        port = self.bind(port["id"], "compute-9", SWITCHDEV_VF)
        self.assert_binding(port, ("agilio_ovs", None), "compute-9 listed")


class TestBindingProfilePolicy(Ml2RestTestCase):
    """Neutron 29's default policy: binding:profile is the service role's
    (Nova's); an admin may not set it, on create or on update."""

    def test_update_admin_is_refused_service_is_allowed(self) -> None:
        port = self.create_port(self.vxlan, "virtio-forwarder")
        refused = self.update_port(port["id"], {portbindings.PROFILE: SWITCHDEV_VF}, "admin")
        self.assertEqual(403, refused.status_int)
        self.assertIn("update_port:binding:profile", refused.text)
        # The admin may set the host alone: the profile is what is refused.
        host_only = self.update_port(port["id"], {portbindings.HOST_ID: SMARTNIC_HOST}, "admin")
        self.assertEqual(200, host_only.status_int)
        allowed = self.update_port(port["id"], {portbindings.PROFILE: SWITCHDEV_VF}, "service")
        self.assertEqual(200, allowed.status_int)
        self.assertEqual(SWITCHDEV_VF, self.show_port(port["id"])[portbindings.PROFILE])

    def test_create_admin_is_refused_service_is_allowed(self) -> None:
        body = {"port": {"network_id": self.vxlan["id"], "project_id": self._project_id,
                         portbindings.VNIC_TYPE: "virtio-forwarder",
                         portbindings.PROFILE: SWITCHDEV_VF}}
        refused = self.new_create_request("ports", body, as_admin=True).get_response(self.api)
        self.assertEqual(403, refused.status_int)
        self.assertIn("create_port:binding:profile", refused.text)
        allowed = self.new_create_request("ports", body, as_service=True).get_response(self.api)
        self.assertEqual(201, allowed.status_int)

    def test_a_member_does_not_see_it_an_admin_does(self) -> None:
        port = self.bound_port(self.vxlan, "virtio-forwarder", SMARTNIC_HOST, SWITCHDEV_VF)
        as_member = self._show("ports", port["id"])["port"]
        self.assertNotIn(portbindings.PROFILE, as_member)
        as_admin = self._show("ports", port["id"], as_admin=True)["port"]
        self.assertEqual(SWITCHDEV_VF, as_admin[portbindings.PROFILE])


class TestMultipleBindings(Ml2RestTestCase):
    """The port-binding calls Nova makes around a live migration:
    an inactive binding on the destination (pre-migration check), activate it
    (post-copy/post-migration), delete the source's (cleanup)."""

    def test_virtio_forwarder_smartnic_to_smartnic(self) -> None:
        for network in (self.vxlan, self.vlan):
            port = self.bound_port(network, "virtio-forwarder", SMARTNIC_HOST, SWITCHDEV_VF)
            port_id = port["id"]

            created = self.create_binding(port, SMARTNIC_HOST_2, SWITCHDEV_VF_2)
            self.assertEqual(201, created.status_int, created.text)
            binding = self.deserialize(self.fmt, created)["binding"]
            self.assertEqual(
                (SMARTNIC_HOST_2, "INACTIVE", "agilio_ovs",
                 binding_resource(forwarder_details(port_id)),
                 SWITCHDEV_VF_2),
                (binding["host"], binding["status"], binding["vif_type"],
                 binding["vif_details"], binding["profile"]))
            # The source is untouched until the destination is activated.
            self.assertEqual(SMARTNIC_HOST, self.show_port(port_id)[portbindings.HOST_ID])
            self.assertEqual({SMARTNIC_HOST: ("ACTIVE", "agilio_ovs"),
                              SMARTNIC_HOST_2: ("INACTIVE", "agilio_ovs")},
                             self.bindings(port_id))

            activated = self.activate_binding(port_id, SMARTNIC_HOST_2)
            self.assertEqual(200, activated.status_int, activated.text)
            # ML2 clears the source binding as it deactivates it: Nova unplugs
            # the source with the VIF it kept (migrate_data), not from Neutron.
            self.assertEqual({SMARTNIC_HOST: ("INACTIVE", "unbound"),
                              SMARTNIC_HOST_2: ("ACTIVE", "agilio_ovs")},
                             self.bindings(port_id))
            moved = self.show_port(port_id)
            self.assertEqual(SMARTNIC_HOST_2, moved[portbindings.HOST_ID])
            self.assertEqual(SWITCHDEV_VF_2, moved[portbindings.PROFILE])
            self.assert_binding(moved, ("agilio_ovs", None), "after activation")

            self.assertEqual(204, self.delete_binding(port_id, SMARTNIC_HOST).status_int)
            self.assertEqual({SMARTNIC_HOST_2: ("ACTIVE", "agilio_ovs")}, self.bindings(port_id))

    def test_virtio_forwarder_smartnic_to_classic_is_refused(self) -> None:
        port = self.bound_port(self.vxlan, "virtio-forwarder", SMARTNIC_HOST, SWITCHDEV_VF)
        refused = self.create_binding(port, CLASSIC_HOST, SWITCHDEV_VF_2)
        # ML2 turns the failed binding into PortBindingError, HTTP 500; Nova's
        # pre-live-migration check then aborts the migration before any move.
        self.assertEqual(500, refused.status_int)
        self.assertIn("PortBindingError", refused.text)
        self.assertIn(CLASSIC_HOST, refused.text)
        self.assertEqual({SMARTNIC_HOST: ("ACTIVE", "agilio_ovs")}, self.bindings(port["id"]))
        self.assertEqual(port, self.show_port(port["id"]))

    def test_switchdev_direct_smartnic_to_classic_becomes_stock_ovs(self) -> None:
        port = self.bound_port(self.vxlan, "direct", SMARTNIC_HOST, SWITCHDEV_VF)
        created = self.create_binding(port, CLASSIC_HOST, SWITCHDEV_VF_2)
        self.assertEqual(201, created.status_int, created.text)
        binding = self.deserialize(self.fmt, created)["binding"]
        self.assertEqual(("ovs", binding_resource(OVS_DIRECT)),
                         (binding["vif_type"], binding["vif_details"]))


# -- Nova --------------------------------------------------------------------------
IMAGE_META = {"properties": {"hw_vif_model": "virtio"}}


class TestNovaBuildsTheGuestInterface(Ml2RestTestCase):
    """Bound ports, as Nova reads them from the REST API, through Nova's VIF
    model, os-vif object and libvirt interface config."""

    def setUp(self) -> None:
        super().setUp()
        # A flavor with hugepages: vhost-user needs the guest's memory shared
        # with the forwarder, which Nova's libvirt driver does for
        # hugepage-backed guests (or with [libvirt] file_backed_memory).
        self.flavor = nova_objects.Flavor(
            id=7, flavorid="7", name="m1.hugepages", vcpus=2, memory_mb=2048, root_gb=10,
            ephemeral_gb=0, swap=0, extra_specs={"hw:mem_page_size": "large"})
        self.image_meta = nova_objects.ImageMeta.from_dict(IMAGE_META)
        self.instance = nova_objects.Instance(
            id=4242, uuid=str(uuid.uuid4()), project_id=self._project_id, user_id="demo",
            display_name="vm1", flavor=self.flavor, vcpus=2, memory_mb=2048)
        self.context = nova.context.get_admin_context()

    def nova_interface(self, network: dict[str, Any], port: dict[str, Any]) -> tuple[Any, Any]:
        """(os-vif VIF, libvirt interface config) Nova makes for the bound port."""
        port = self.show_port(port["id"])
        # Nova's Neutron client (the one it is handed, and the admin one it
        # gets itself), answering from what the REST API returned.
        client = FakeNeutron([network], self.subnets(network), [port])
        with mock.patch.object(nova_neutron, "get_client", return_value=client):
            vif = nova_neutron.API()._build_vif_model(self.context, client, port, [network], [])
        self.assertIsInstance(vif, nova_model.VIF)
        osvif = os_vif_util.nova_to_osvif_vif(vif)
        conf = libvirt_vif.LibvirtGenericVIFDriver().get_config(
            self.instance, vif, self.image_meta, self.flavor, "kvm")
        return osvif, conf

    def validated(self, conf: Any, memory_backing: str = "") -> ET.Element:
        xml = conf.to_xml()
        validate(domain_xml([xml], memory_backing))
        return ET.fromstring(xml)

    @staticmethod
    def hugepage_guest_memory() -> str:
        """What Nova's libvirt driver writes around the devices of this
        flavor's guest, in Nova's own config classes: 2 MiB pages
        (``_get_guest_memory_backing_config``) and a NUMA cell with
        ``memAccess='shared'`` (set for hugepage guests), which is what lets
        the forwarder map the guest's memory."""
        page = libvirt_config.LibvirtConfigGuestMemoryBackingPage()
        page.size_kb, page.nodeset = 2048, [0]
        backing = libvirt_config.LibvirtConfigGuestMemoryBacking()
        backing.hugepages = [page]
        cell = libvirt_config.LibvirtConfigGuestCPUNUMACell()
        cell.id, cell.cpus, cell.memory, cell.memAccess = 0, {0, 1}, 1048576, "shared"
        cpu = libvirt_config.LibvirtConfigGuestCPU()
        cpu.numa = libvirt_config.LibvirtConfigGuestCPUNUMA()
        cpu.numa.cells = [cell]
        return str(backing.to_xml() + cpu.to_xml())

    def test_flavor_asks_for_hugepages(self) -> None:
        topology = hardware.numa_get_constraints(self.flavor, self.image_meta)
        self.assertEqual([hardware.MEMPAGES_LARGE], [c.pagesize for c in topology.cells])

    def test_virtio_forwarder_is_vhostuser(self) -> None:
        for network in (self.vxlan, self.vlan):
            port = self.bound_port(network, "virtio-forwarder", SMARTNIC_HOST, SWITCHDEV_VF)
            osvif, conf = self.nova_interface(network, port)
            self.assertIsInstance(osvif, osv_vif.VIFVHostUser)
            self.assertEqual("agilio_ovs", osvif.plugin)
            self.assertEqual(SWITCHDEV_VF["pci_slot"], osvif.port_profile.representor_address)

            element = self.validated(conf, self.hugepage_guest_memory())

            self.assertEqual("vhostuser", element.get("type"))
            source = element.find("source")
            assert source is not None
            self.assertEqual(
                {"type": "unix", "mode": "server",
                 "path": f"/var/lib/vhost_sockets/vhu{port['id'][:11]}"},
                source.attrib)
            self.assertEqual(port["mac_address"], element.find("mac").get("address"))
            self.assertEqual("virtio", element.find("model").get("type"))
            self.assertEqual(("tap" + port["id"])[:14], element.find("target").get("dev"))
            # Nova sets the network MTU on the config object, but libvirt's
            # vhostuser interface gets no <mtu> from Nova 34's format_dom (only
            # ethernet and bridge interfaces do): the guest must learn the
            # VXLAN network's smaller MTU from DHCP or metadata.
            self.assertEqual(network["mtu"], conf.mtu)
            self.assertIsNone(element.find("mtu"))
        self.assertEqual((1450, 1500), (self.vxlan["mtu"], self.vlan["mtu"]))

    def test_switchdev_direct_is_a_hostdev_interface_with_the_vf(self) -> None:
        for host, plugin in ((SMARTNIC_HOST, "agilio_ovs"), (CLASSIC_HOST, "ovs")):
            port = self.bound_port(self.vlan, "direct", host, SWITCHDEV_VF)
            osvif, conf = self.nova_interface(self.vlan, port)
            self.assertIsInstance(osvif, osv_vif.VIFHostDevice)
            self.assertEqual(plugin, osvif.plugin)
            element = self.validated(conf)
            self.assertEqual(("hostdev", "yes"), (element.get("type"), element.get("managed")))
            address = element.find("source/address")
            assert address is not None
            # 0000:05:08.1
            self.assertEqual(
                {"type": "pci", "domain": "0x0000", "bus": "0x05", "slot": "0x08",
                 "function": "0x1"},
                address.attrib)
            self.assertEqual(port["mac_address"], element.find("mac").get("address"))
            self.assertIsNone(element.find("model"))
            self.assertIsNone(element.find("mtu"))
            # The VLAN network's tag is OVS's business (on the representor),
            # not the VF's: no <vlan> as for a legacy SR-IOV (hw_veb) port.
            self.assertIsNone(element.find("vlan"))

    def test_normal_port_is_an_ethernet_tap_os_vif_creates(self) -> None:
        for host in (SMARTNIC_HOST, CLASSIC_HOST):
            port = self.bound_port(self.vxlan, "normal", host, None)
            osvif, conf = self.nova_interface(self.vxlan, port)
            # os-vif's own ovs plugin on both kinds of host.
            self.assertIsInstance(osvif, osv_vif.VIFOpenVSwitch)
            self.assertEqual("ovs", osvif.plugin)
            element = self.validated(conf)
            self.assertEqual("ethernet", element.get("type"))
            target = element.find("target")
            assert target is not None
            self.assertEqual({"dev": ("tap" + port["id"])[:14], "managed": "no"}, target.attrib)
            self.assertEqual({"size": "1450"}, element.find("mtu").attrib)
            self.assertEqual("virtio", element.find("model").get("type"))

    def test_interface_schema_is_not_the_one_for_guest_interfaces(self) -> None:
        # virt-xml-validate's "interface" schema describes host interfaces
        # (virInterface); a guest's <interface> is checked inside a domain.
        port = self.bound_port(self.vxlan, "virtio-forwarder", SMARTNIC_HOST, SWITCHDEV_VF)
        _, conf = self.nova_interface(self.vxlan, port)
        self.assertRaises(AssertionError, validate, conf.to_xml(), "interface")
