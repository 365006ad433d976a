"""What smartnic_ovs binds, for every vnic type, on SmartNIC and classic hosts.

The stock driver is the reference: wherever smartnic_ovs must behave as stock,
both drivers bind the same port context and the results are compared whole.

The last test class hands the bindings to the installed Nova: its own
``nova.network.neutron.API._build_vif_model`` (only its calls to the Neutron API
stubbed) and ``nova.network.os_vif_util.nova_to_osvif_vif`` turn them into the
os-vif object the compute node's plugin would receive.
"""

from __future__ import annotations

from typing import Any
from unittest import mock

import os_vif.objects
from neutron.plugins.ml2.drivers.openvswitch.mech_driver import mech_openvswitch
from neutron.tests.unit.plugins.ml2 import _test_mech_agent as base
from neutron_lib import constants
from neutron_lib.api.definitions import portbindings
from neutron_lib.callbacks import events, registry
from neutron_lib.plugins.ml2 import api
from neutron_lib.plugins.ml2 import ovs_constants as ovs_const
from nova.network import model as nova_model
from nova.network import neutron as nova_neutron
from nova.network import os_vif_util
from os_vif.objects import vif as osv_vif
from oslo_config import cfg

from smartnic_vif.neutron import config
from smartnic_vif.neutron.mech_driver import (
    SmartNICOVSMechanismDriver,
    has_switchdev_capability,
    is_smartnic_agent,
    vhostuser_socket_path,
)

PORT_ID = "3f1c2b7e-9d4a-4e36-8a51-0c6de2f4b911"
SMARTNIC_HOST = "compute-sn-1"
CLASSIC_HOST = "compute-1"
SWITCHDEV = {"capabilities": ["switchdev"], "pci_slot": "0000:05:08.1"}
LEGACY_VF = {"capabilities": [], "pci_slot": "0000:05:08.2"}

# What a neutron-openvswitch-agent reports: the native firewall (no hybrid
# plug), the kernel datapath, tunnels and one provider bridge.
AGENT_CONFIGURATIONS: dict[str, Any] = {
    "bridge_mappings": {"physnet1": "br-ex"},
    "integration_bridge": "br-int",
    "tunnel_types": ["vxlan"],
    "datapath_type": ovs_const.OVS_DATAPATH_SYSTEM,
    "ovs_capabilities": {"datapath_types": ["system", "netdev"], "iface_types": ["system"]},
    "vhostuser_socket_dir": ovs_const.VHOST_USER_SOCKET_DIR,
    portbindings.OVS_HYBRID_PLUG: False,
    "baremetal_smartnic": False,
    "extensions": ["qos"],
}

VXLAN_SEGMENTS = [
    {
        api.ID: "vxlan-seg",
        api.NETWORK_TYPE: "vxlan",
        api.SEGMENTATION_ID: 1001,
        api.NETWORK_ID: "net-1",
    },
]
VLAN_SEGMENTS = [
    {api.ID: "vlan-other", api.NETWORK_TYPE: "vlan", api.PHYSICAL_NETWORK: "physnet9",
     api.SEGMENTATION_ID: 7, api.NETWORK_ID: "net-2"},
    {api.ID: "vlan-seg", api.NETWORK_TYPE: "vlan", api.PHYSICAL_NETWORK: "physnet1",
     api.SEGMENTATION_ID: 100, api.NETWORK_ID: "net-2"},
]  # fmt: skip


def agent(host: str, alive: bool = True, **configurations: Any) -> dict[str, Any]:
    return {
        "alive": alive,
        "host": host,
        "agent_type": constants.AGENT_TYPE_OVS,
        "configurations": {**AGENT_CONFIGURATIONS, **configurations},
    }


class PortContext(base.FakePortContext):
    """Neutron's fake port context with a real (UUID) port id."""

    def __init__(self, *args: Any, port_id: str = PORT_ID, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._port_id = port_id

    @property
    def current(self) -> dict[str, Any]:
        port: dict[str, Any] = super().current
        port["id"] = self._port_id
        return port


def port_context(
    host: dict[str, Any],
    vnic_type: str,
    profile: dict[str, Any] | None = None,
    segments: list[dict[str, Any]] | None = None,
) -> PortContext:
    return PortContext(
        constants.AGENT_TYPE_OVS,
        [host],
        segments or VXLAN_SEGMENTS,
        vnic_type=vnic_type,
        profile=profile,
    )


def binding(context: PortContext) -> tuple[Any, Any, Any]:
    return context._bound_segment_id, context._bound_vif_type, context._bound_vif_details


class DriverTestCase(base.AgentMechanismBaseTestCase):
    """Neutron's ML2 test base (private config, callback registry, policy)
    with both drivers built under the same configuration."""

    def setUp(self) -> None:
        super().setUp()
        cfg.CONF.set_override("firewall_driver", "openvswitch", "SECURITYGROUP")
        cfg.CONF.set_override("smartnic_hosts", [SMARTNIC_HOST], group=config.GROUP)
        self.driver = SmartNICOVSMechanismDriver()
        self.driver.initialize()
        self.stock = mech_openvswitch.OpenvswitchMechanismDriver()
        self.stock.initialize()

    def bind(self, driver: Any, *args: Any, **kwargs: Any) -> PortContext:
        context = port_context(*args, **kwargs)
        driver.bind_port(context)
        return context

    def assert_same_as_stock(self, *args: Any, **kwargs: Any) -> PortContext:
        ours = self.bind(self.driver, *args, **kwargs)
        reference = self.bind(self.stock, *args, **kwargs)
        self.assertEqual(binding(reference), binding(ours))
        return ours

    def expected_forwarder_details(self, **changes: Any) -> dict[str, Any]:
        details = {
            portbindings.VIF_DETAILS_CONNECTIVITY: portbindings.CONNECTIVITY_L2,
            portbindings.CAP_PORT_FILTER: False,
            portbindings.OVS_HYBRID_PLUG: False,
            portbindings.VHOST_USER_MODE: portbindings.VHOST_USER_MODE_SERVER,
            portbindings.VHOST_USER_OVS_PLUG: True,
            portbindings.VHOST_USER_SOCKET: "/var/lib/vhost_sockets/vhu3f1c2b7e-9d",
            portbindings.OVS_DATAPATH_TYPE: "system",
            portbindings.VIF_DETAILS_BRIDGE_NAME: "br-int",
        }
        details.update(changes)
        return details


# (vnic type, binding profile) -> expected result on a SmartNIC host and on a
# classic host. "stock": exactly what the stock driver does (bound or not).
# "agilio-direct" / "agilio-forwarder": agilio_ovs with OVS / vhost-user details.
# "unbound": this driver leaves the port (stock also does, checked too).
MATRIX: list[tuple[str, dict[str, Any] | None, str, str]] = [
    (portbindings.VNIC_NORMAL, None, "stock", "stock"),
    (portbindings.VNIC_DIRECT, SWITCHDEV, "agilio-direct", "stock"),
    (portbindings.VNIC_DIRECT, LEGACY_VF, "unbound", "unbound"),
    (portbindings.VNIC_DIRECT, None, "unbound", "unbound"),
    (portbindings.VNIC_VIRTIO_FORWARDER, SWITCHDEV, "agilio-forwarder", "unbound"),
    (portbindings.VNIC_VIRTIO_FORWARDER, None, "agilio-forwarder", "unbound"),
    (portbindings.VNIC_MACVTAP, LEGACY_VF, "unbound", "unbound"),
    (portbindings.VNIC_DIRECT_PHYSICAL, {"pci_slot": "0000:05:00.0"}, "unbound", "unbound"),
    (portbindings.VNIC_BAREMETAL, None, "unbound", "unbound"),
    (portbindings.VNIC_SMARTNIC, None, "stock", "stock"),
    (portbindings.VNIC_VHOST_VDPA, SWITCHDEV, "stock", "stock"),
    (portbindings.VNIC_REMOTE_MANAGED, SWITCHDEV, "unbound", "unbound"),
    (portbindings.VNIC_ACCELERATOR_DIRECT, None, "unbound", "unbound"),
    (portbindings.VNIC_ACCELERATOR_DIRECT_PHYSICAL, None, "unbound", "unbound"),
]


class TestVnicTypeMatrix(DriverTestCase):
    def test_matrix_covers_every_vnic_type(self) -> None:
        self.assertEqual(set(portbindings.VNIC_TYPES), {row[0] for row in MATRIX})

    def _check(self, host: dict[str, Any], vnic: str, profile: Any, expected: str) -> None:
        label = f"{vnic} {profile} on {host['host']}"
        ours = self.bind(self.driver, host, vnic, profile)
        reference = self.bind(self.stock, host, vnic, profile)
        if expected == "stock":
            self.assertEqual(binding(reference), binding(ours), label)
        elif expected == "unbound":
            self.assertEqual((None, None, None), binding(ours), label)
            if vnic != portbindings.VNIC_VIRTIO_FORWARDER:
                # Same refusal as stock; virtio-forwarder is the one type the
                # stock driver could not bind anywhere.
                self.assertEqual((None, None, None), binding(reference), label)
        elif expected == "agilio-direct":
            segment, vif_type, details = binding(reference)
            self.assertEqual(portbindings.VIF_TYPE_OVS, vif_type, label)
            self.assertEqual(
                (segment, portbindings.VIF_TYPE_AGILIO_OVS, details), binding(ours), label
            )
        elif expected == "agilio-forwarder":
            self.assertEqual(
                ("vxlan-seg", portbindings.VIF_TYPE_AGILIO_OVS, self.expected_forwarder_details()),
                binding(ours),
                label,
            )
        else:  # pragma: no cover - a typo in MATRIX
            self.fail(expected)

    def test_smartnic_host(self) -> None:
        for vnic, profile, on_smartnic, _ in MATRIX:
            self._check(agent(SMARTNIC_HOST), vnic, profile, on_smartnic)

    def test_classic_host(self) -> None:
        for vnic, profile, _, on_classic in MATRIX:
            self._check(agent(CLASSIC_HOST), vnic, profile, on_classic)

    def test_normal_port_is_plain_ovs_on_both_kinds_of_host(self) -> None:
        for host in (SMARTNIC_HOST, CLASSIC_HOST):
            context = self.bind(self.driver, agent(host), portbindings.VNIC_NORMAL)
            self.assertEqual(portbindings.VIF_TYPE_OVS, context._bound_vif_type)
            self.assertEqual(
                {
                    # [OVS_DRIVER] ovs_create_tap defaults to True in Neutron 29.
                    "ovs_create_tap": True,
                    portbindings.VIF_DETAILS_CONNECTIVITY: portbindings.CONNECTIVITY_L2,
                    portbindings.CAP_PORT_FILTER: True,
                    portbindings.OVS_HYBRID_PLUG: False,
                    portbindings.OVS_DATAPATH_TYPE: "system",
                    portbindings.VIF_DETAILS_BRIDGE_NAME: "br-int",
                },
                context._bound_vif_details,
            )

    def test_switchdev_direct_on_smartnic_host_gets_ovs_details(self) -> None:
        context = self.bind(self.driver, agent(SMARTNIC_HOST), portbindings.VNIC_DIRECT, SWITCHDEV)
        self.assertEqual(portbindings.VIF_TYPE_AGILIO_OVS, context._bound_vif_type)
        self.assertEqual(
            {
                portbindings.VIF_DETAILS_CONNECTIVITY: portbindings.CONNECTIVITY_L2,
                portbindings.CAP_PORT_FILTER: True,
                portbindings.OVS_HYBRID_PLUG: False,
                portbindings.OVS_DATAPATH_TYPE: "system",
                portbindings.VIF_DETAILS_BRIDGE_NAME: "br-int",
            },
            context._bound_vif_details,
        )

    def test_smartnic_vnic_type_needs_a_baremetal_smartnic_agent_as_in_stock(self) -> None:
        ironic_dpu = agent(SMARTNIC_HOST, baremetal_smartnic=True)
        context = self.assert_same_as_stock(ironic_dpu, portbindings.VNIC_SMARTNIC)
        self.assertEqual(portbindings.VIF_TYPE_OVS, context._bound_vif_type)


class TestVirtioForwarder(DriverTestCase):
    def test_supported_vnic_types(self) -> None:
        self.assertEqual(
            [
                portbindings.VNIC_NORMAL,
                portbindings.VNIC_DIRECT,
                portbindings.VNIC_SMARTNIC,
                portbindings.VNIC_VHOST_VDPA,
                portbindings.VNIC_VIRTIO_FORWARDER,
            ],
            self.driver.supported_vnic_types,
        )
        self.assertNotIn(portbindings.VNIC_VIRTIO_FORWARDER, self.stock.supported_vnic_types)

    def test_socket_name_is_vhu_and_port_id_cut_to_14(self) -> None:
        path = vhostuser_socket_path("/var/lib/vhost_sockets", PORT_ID)
        self.assertEqual("/var/lib/vhost_sockets/vhu3f1c2b7e-9d", path)
        self.assertEqual(14, len(path.rsplit("/", 1)[1]))
        self.assertEqual("/run/x/vhushort", vhostuser_socket_path("/run/x", "short"))

    def test_socket_dir_and_mode_are_configurable(self) -> None:
        cfg.CONF.set_override("vhostuser_socket_dir", "/run/xvio", group=config.GROUP)
        cfg.CONF.set_override("vhostuser_mode", "client", group=config.GROUP)
        context = self.bind(
            self.driver, agent(SMARTNIC_HOST), portbindings.VNIC_VIRTIO_FORWARDER, SWITCHDEV
        )
        self.assertEqual(
            self.expected_forwarder_details(
                vhostuser_socket="/run/xvio/vhu3f1c2b7e-9d", vhostuser_mode="client"
            ),
            context._bound_vif_details,
        )

    def test_vhostuser_mode_rejects_other_values(self) -> None:
        self.assertRaises(
            ValueError,
            cfg.CONF.set_override,
            "vhostuser_mode",
            "both",
            group=config.GROUP,
        )

    def test_agent_datapath_and_bridge_are_used(self) -> None:
        host = agent(
            SMARTNIC_HOST,
            datapath_type=ovs_const.OVS_DATAPATH_NETDEV,
            integration_bridge="br-acc",
            ovs_capabilities={"iface_types": [ovs_const.OVS_DPDK_VHOST_USER_CLIENT]},
        )
        context = self.bind(self.driver, host, portbindings.VNIC_VIRTIO_FORWARDER)
        # agilio_ovs, not the stock driver's vhostuser for DPDK agents.
        self.assertEqual(portbindings.VIF_TYPE_AGILIO_OVS, context._bound_vif_type)
        self.assertEqual(
            self.expected_forwarder_details(datapath_type="netdev", bridge_name="br-acc"),
            context._bound_vif_details,
        )
        # A normal port on the same DPDK agent stays the stock vhostuser port.
        normal = self.assert_same_as_stock(host, portbindings.VNIC_NORMAL)
        self.assertEqual(portbindings.VIF_TYPE_VHOST_USER, normal._bound_vif_type)

    def test_agent_without_integration_bridge_gives_no_bridge_name(self) -> None:
        host = agent(SMARTNIC_HOST)
        del host["configurations"]["integration_bridge"]
        context = self.bind(self.driver, host, portbindings.VNIC_VIRTIO_FORWARDER)
        self.assertNotIn(portbindings.VIF_DETAILS_BRIDGE_NAME, context._bound_vif_details)

    def test_trunk_bridge_name_callback_is_honoured(self) -> None:
        def trunk_bridge(resource: Any, event: Any, trigger: Any, payload: Any = None) -> None:
            self.assertEqual(PORT_ID, payload.metadata["port"]["id"])
            trigger("tbr-3f1c2b7e-9")

        registry.subscribe(trunk_bridge, ovs_const.OVS_BRIDGE_NAME, events.BEFORE_READ)
        context = self.bind(self.driver, agent(SMARTNIC_HOST), portbindings.VNIC_VIRTIO_FORWARDER)
        self.assertEqual(
            "tbr-3f1c2b7e-9", context._bound_vif_details[portbindings.VIF_DETAILS_BRIDGE_NAME]
        )

    def test_segment_rules_are_the_stock_ones(self) -> None:
        context = self.bind(
            self.driver,
            agent(SMARTNIC_HOST),
            portbindings.VNIC_VIRTIO_FORWARDER,
            segments=VLAN_SEGMENTS,
        )
        # physnet9 is not in the agent's bridge mappings: the second segment.
        self.assertEqual("vlan-seg", context._bound_segment_id)
        unreachable = self.bind(
            self.driver,
            agent(SMARTNIC_HOST, bridge_mappings={}),
            portbindings.VNIC_VIRTIO_FORWARDER,
            segments=VLAN_SEGMENTS,
        )
        self.assertEqual((None, None, None), binding(unreachable))

    def test_dead_smartnic_agent_does_not_bind(self) -> None:
        context = self.bind(
            self.driver, agent(SMARTNIC_HOST, alive=False), portbindings.VNIC_VIRTIO_FORWARDER
        )
        self.assertEqual((None, None, None), binding(context))


class TestSmartNICHostIdentification(DriverTestCase):
    def test_pure_function(self) -> None:
        host = {"host": "Compute-SN-7.example.org", "configurations": {"extensions": ["qos"]}}
        self.assertTrue(is_smartnic_agent(host, ["compute-sn-7.example.org"]))
        self.assertTrue(is_smartnic_agent(host, ["compute-sn-*"]))
        self.assertTrue(is_smartnic_agent(host, [" other ", "COMPUTE-SN-?.example.org"]))
        self.assertFalse(is_smartnic_agent(host, ["compute-sn-7"]))
        self.assertFalse(is_smartnic_agent(host, []))
        self.assertFalse(is_smartnic_agent(host, ["", "  "]))
        self.assertFalse(is_smartnic_agent({"configurations": {}}, ["*"]))
        self.assertTrue(is_smartnic_agent(host, [], "qos"))
        self.assertFalse(is_smartnic_agent(host, [], "smartnic"))
        self.assertFalse(is_smartnic_agent({"host": "x"}, [], "smartnic"))

    def test_switchdev_capability(self) -> None:
        self.assertTrue(has_switchdev_capability({portbindings.PROFILE: SWITCHDEV}))
        self.assertFalse(has_switchdev_capability({portbindings.PROFILE: LEGACY_VF}))
        self.assertFalse(has_switchdev_capability({portbindings.PROFILE: None}))
        self.assertFalse(has_switchdev_capability({portbindings.PROFILE: {"capabilities": None}}))
        self.assertFalse(has_switchdev_capability({}))

    def test_no_smartnic_host_configured_means_stock_everywhere(self) -> None:
        cfg.CONF.set_override("smartnic_hosts", [], group=config.GROUP)
        context = self.bind(
            self.driver, agent(SMARTNIC_HOST), portbindings.VNIC_VIRTIO_FORWARDER, SWITCHDEV
        )
        self.assertEqual((None, None, None), binding(context))
        self.assert_same_as_stock(agent(SMARTNIC_HOST), portbindings.VNIC_DIRECT, SWITCHDEV)

    def test_host_list_is_read_at_every_binding(self) -> None:
        cfg.CONF.set_override("smartnic_hosts", [], group=config.GROUP)
        host = agent("compute-sn-2")
        self.assertIsNone(
            self.bind(self.driver, host, portbindings.VNIC_VIRTIO_FORWARDER)._bound_vif_type
        )
        cfg.CONF.set_override("smartnic_hosts", ["compute-sn-*"], group=config.GROUP)
        self.assertEqual(
            portbindings.VIF_TYPE_AGILIO_OVS,
            self.bind(self.driver, host, portbindings.VNIC_VIRTIO_FORWARDER)._bound_vif_type,
        )
        self.assertTrue(cfg.CONF[config.GROUP]._group._opts["smartnic_hosts"]["opt"].mutable)

    def test_agent_extension_marks_a_smartnic_host(self) -> None:
        cfg.CONF.set_override("smartnic_hosts", [], group=config.GROUP)
        marked = agent("compute-9", extensions=["qos", "smartnic"])
        # Not used until configured.
        self.assertIsNone(
            self.bind(self.driver, marked, portbindings.VNIC_VIRTIO_FORWARDER)._bound_vif_type
        )
        cfg.CONF.set_override("smartnic_agent_extension", "smartnic", group=config.GROUP)
        self.assertEqual(
            portbindings.VIF_TYPE_AGILIO_OVS,
            self.bind(self.driver, marked, portbindings.VNIC_VIRTIO_FORWARDER)._bound_vif_type,
        )
        self.assertEqual(
            portbindings.VIF_TYPE_AGILIO_OVS,
            self.bind(self.driver, marked, portbindings.VNIC_DIRECT, SWITCHDEV)._bound_vif_type,
        )
        unmarked = agent("compute-10")
        self.assertIsNone(
            self.bind(self.driver, unmarked, portbindings.VNIC_VIRTIO_FORWARDER)._bound_vif_type
        )
        self.assert_same_as_stock(unmarked, portbindings.VNIC_DIRECT, SWITCHDEV)

    def test_two_kinds_of_host_side_by_side(self) -> None:
        # One driver, one configuration, ports on both kinds of host in turn.
        for host, vnic, profile, vif_type in [
            (SMARTNIC_HOST, portbindings.VNIC_VIRTIO_FORWARDER, SWITCHDEV, "agilio_ovs"),
            (CLASSIC_HOST, portbindings.VNIC_VIRTIO_FORWARDER, SWITCHDEV, None),
            (SMARTNIC_HOST, portbindings.VNIC_DIRECT, SWITCHDEV, "agilio_ovs"),
            (CLASSIC_HOST, portbindings.VNIC_DIRECT, SWITCHDEV, "ovs"),
            (SMARTNIC_HOST, portbindings.VNIC_NORMAL, None, "ovs"),
            (CLASSIC_HOST, portbindings.VNIC_NORMAL, None, "ovs"),
            (SMARTNIC_HOST, portbindings.VNIC_DIRECT, LEGACY_VF, None),
        ]:
            context = self.bind(self.driver, agent(host), vnic, profile)
            self.assertEqual(vif_type, context._bound_vif_type, f"{vnic} on {host}")


class TestProhibitLists(DriverTestCase):
    def driver_with(self, group: str, prohibited: list[str]) -> SmartNICOVSMechanismDriver:
        cfg.CONF.set_override("vnic_type_prohibit_list", prohibited, group=group)
        return SmartNICOVSMechanismDriver()

    def test_own_list_can_prohibit_virtio_forwarder(self) -> None:
        driver = self.driver_with(config.GROUP, [portbindings.VNIC_VIRTIO_FORWARDER])
        self.assertNotIn(portbindings.VNIC_VIRTIO_FORWARDER, driver.supported_vnic_types)
        context = port_context(agent(SMARTNIC_HOST), portbindings.VNIC_VIRTIO_FORWARDER)
        driver.bind_port(context)
        self.assertEqual((None, None, None), binding(context))
        # The rest still binds.
        context = port_context(agent(SMARTNIC_HOST), portbindings.VNIC_DIRECT, SWITCHDEV)
        driver.bind_port(context)
        self.assertEqual(portbindings.VIF_TYPE_AGILIO_OVS, context._bound_vif_type)

    def test_own_list_can_prohibit_direct(self) -> None:
        driver = self.driver_with(config.GROUP, [portbindings.VNIC_DIRECT])
        context = port_context(agent(SMARTNIC_HOST), portbindings.VNIC_DIRECT, SWITCHDEV)
        driver.bind_port(context)
        self.assertEqual((None, None, None), binding(context))

    def test_own_list_rejects_unknown_vnic_types(self) -> None:
        self.assertRaises(ValueError, self.driver_with, config.GROUP, [portbindings.VNIC_MACVTAP])
        self.assertRaises(ValueError, self.driver_with, config.GROUP, ["foo"])

    def test_own_list_cannot_prohibit_everything(self) -> None:
        everything = [*self.driver.supported_vnic_types]
        self.assertRaises(ValueError, self.driver_with, config.GROUP, everything)

    def test_stock_list_still_applies_to_stock_vnic_types(self) -> None:
        driver = self.driver_with("OVS_DRIVER", [portbindings.VNIC_DIRECT])
        self.assertEqual(
            [
                portbindings.VNIC_NORMAL,
                portbindings.VNIC_SMARTNIC,
                portbindings.VNIC_VHOST_VDPA,
                portbindings.VNIC_VIRTIO_FORWARDER,
            ],
            driver.supported_vnic_types,
        )

    def test_stock_list_cannot_name_virtio_forwarder(self) -> None:
        # The reason for [smartnic_ovs] vnic_type_prohibit_list.
        self.assertRaises(
            ValueError, self.driver_with, "OVS_DRIVER", [portbindings.VNIC_VIRTIO_FORWARDER]
        )

    def test_both_lists_together(self) -> None:
        cfg.CONF.set_override("vnic_type_prohibit_list", ["vdpa"], group="OVS_DRIVER")
        driver = self.driver_with(config.GROUP, ["smart-nic", "vdpa"])
        self.assertEqual(["normal", "direct", "virtio-forwarder"], driver.supported_vnic_types)


MAC = "fa:16:3e:12:34:56"
NETWORK_ID = "6b0d1a4e-2f57-4c1e-9d3b-8a7f5e2c4d10"


class TestNovaReadsTheBinding(DriverTestCase):
    def setUp(self) -> None:
        super().setUp()
        os_vif.objects.register_all()

    def nova_vif(self, host: str, vnic_type: str, profile: dict[str, Any] | None) -> Any:
        context = port_context(agent(host), vnic_type, profile)
        self.driver.bind_port(context)
        self.assertIsNotNone(context._bound_vif_type, f"{vnic_type} on {host} not bound")
        port = {
            "id": PORT_ID,
            "network_id": NETWORK_ID,
            "tenant_id": "project-1",
            "mac_address": MAC,
            "admin_state_up": True,
            "status": "DOWN",
            "binding:vnic_type": vnic_type,
            "binding:vif_type": context._bound_vif_type,
            "binding:vif_details": context._bound_vif_details,
            "binding:profile": profile or {},
        }
        networks = [{"id": NETWORK_ID, "name": "private", "tenant_id": "project-1", "mtu": 1450}]
        api = nova_neutron.API()
        with (
            mock.patch.object(nova_neutron, "get_client"),
            mock.patch.object(api, "_nw_info_get_ips", return_value=[]),
            mock.patch.object(api, "_nw_info_get_subnets", return_value=[]),
            mock.patch.object(api, "_get_physnet_tunneled_info", return_value=(None, True)),
        ):
            vif = api._build_vif_model(mock.sentinel.ctx, mock.Mock(), port, networks, [])
        return os_vif_util.nova_to_osvif_vif(vif)

    def test_virtio_forwarder_on_smartnic_host(self) -> None:
        vif = self.nova_vif(SMARTNIC_HOST, "virtio-forwarder", SWITCHDEV)
        self.assertIsInstance(vif, osv_vif.VIFVHostUser)
        self.assertEqual("agilio_ovs", vif.plugin)
        self.assertEqual("/var/lib/vhost_sockets/vhu3f1c2b7e-9d", vif.path)
        self.assertEqual("server", vif.mode)
        self.assertEqual("tap3f1c2b7e-9d", vif.vif_name)
        self.assertEqual("br-int", vif.network.bridge)
        self.assertFalse(vif.has_traffic_filtering)
        profile = vif.port_profile
        self.assertIsInstance(profile, osv_vif.VIFPortProfileOVSRepresentor)
        self.assertEqual(PORT_ID, profile.interface_id)
        self.assertEqual("0000:05:08.1", profile.representor_address)
        self.assertEqual("tap3f1c2b7e-9d", profile.datapath_offload.representor_name)

    def test_virtio_forwarder_client_mode_reaches_nova(self) -> None:
        cfg.CONF.set_override("vhostuser_mode", "client", group=config.GROUP)
        vif = self.nova_vif(SMARTNIC_HOST, "virtio-forwarder", SWITCHDEV)
        self.assertEqual("client", vif.mode)

    def test_switchdev_direct_on_smartnic_host(self) -> None:
        vif = self.nova_vif(SMARTNIC_HOST, "direct", SWITCHDEV)
        self.assertIsInstance(vif, osv_vif.VIFHostDevice)
        self.assertEqual("agilio_ovs", vif.plugin)
        self.assertEqual("0000:05:08.1", vif.dev_address)
        self.assertEqual("br-int", vif.network.bridge)
        self.assertEqual("0000:05:08.1", vif.port_profile.datapath_offload.representor_address)

    def test_switchdev_direct_on_classic_host_is_the_stock_ovs_plugin(self) -> None:
        vif = self.nova_vif(CLASSIC_HOST, "direct", SWITCHDEV)
        self.assertIsInstance(vif, osv_vif.VIFHostDevice)
        self.assertEqual("ovs", vif.plugin)

    def test_normal_port_on_smartnic_host_is_plain_ovs(self) -> None:
        vif = self.nova_vif(SMARTNIC_HOST, "normal", None)
        self.assertIsInstance(vif, osv_vif.VIFOpenVSwitch)
        self.assertEqual("ovs", vif.plugin)
        self.assertEqual("br-int", vif.bridge_name)
        self.assertEqual("system", vif.port_profile.datapath_type)

    def test_nova_knows_the_vif_type(self) -> None:
        # The string the driver answers is Nova's own constant, not a lookalike.
        self.assertEqual(nova_model.VIF_TYPE_AGILIO_OVS, "agilio_ovs")
        self.assertIs(SmartNICOVSMechanismDriver, type(self.driver))
