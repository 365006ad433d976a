"""Neutron's own tests of the stock OVS mechanism driver, run against smartnic_ovs.

Every test class of ``neutron.tests.unit.plugins.ml2.drivers.openvswitch.
mech_driver.test_mech_openvswitch`` is subclassed here unchanged, except that
each driver the stock tests build (in ``setUp`` and inside test bodies) is a
``SmartNICOVSMechanismDriver``. They run twice over:

- with no SmartNIC host configured: the driver must be the stock driver;
- with every host a SmartNIC host (``smartnic_hosts = *``) for the classes
  that bind normal ports: normal ports on SmartNIC hosts must still be bound
  exactly as the stock driver binds them.

Only two expectations differ, both on purpose and overridden below: the list
of supported vnic types has virtio-forwarder, and on a SmartNIC host a
switchdev direct port is ``agilio_ovs`` instead of ``ovs``.
"""

from __future__ import annotations

from typing import Any

import fixtures
from neutron.plugins.ml2.drivers.openvswitch.mech_driver import mech_openvswitch
from neutron.tests.unit.plugins.ml2 import _test_mech_agent as base
from neutron.tests.unit.plugins.ml2.drivers.openvswitch.mech_driver import (
    test_mech_openvswitch as stock,
)
from neutron_lib.api.definitions import portbindings
from oslo_config import cfg

from smartnic_vif.neutron import config
from smartnic_vif.neutron.mech_driver import SmartNICOVSMechanismDriver

STOCK_DRIVER = (
    "neutron.plugins.ml2.drivers.openvswitch.mech_driver.mech_openvswitch."
    "OpenvswitchMechanismDriver"
)


class ClassicHosts:
    """Mixin: run a stock test class against SmartNICOVSMechanismDriver."""

    SMARTNIC_HOSTS: list[str] = []

    driver: Any

    def setUp(self) -> None:
        # Installed before the stock setUp so that the driver it builds, and
        # every driver a stock test body builds by the stock class name, is ours.
        self.useFixture(fixtures.MonkeyPatch(STOCK_DRIVER, SmartNICOVSMechanismDriver))  # type: ignore[attr-defined]
        super().setUp()  # type: ignore[misc]
        cfg.CONF.set_override("smartnic_hosts", self.SMARTNIC_HOSTS, group=config.GROUP)
        assert mech_openvswitch.OpenvswitchMechanismDriver is SmartNICOVSMechanismDriver
        assert type(self.driver) is SmartNICOVSMechanismDriver


class SmartNICHosts(ClassicHosts):
    SMARTNIC_HOSTS = ["*"]


# --- no SmartNIC host: everything the stock driver does ----------------------


class TestStockBase(ClassicHosts, stock.OpenvswitchMechanismBaseTestCase):
    pass


class TestStockSGDisabledBase(ClassicHosts, stock.OpenvswitchMechanismSGDisabledBaseTestCase):
    pass


class TestStockHybridPlug(ClassicHosts, stock.OpenvswitchMechanismHybridPlugTestCase):
    pass


class TestStockGeneric(ClassicHosts, stock.OpenvswitchMechanismGenericTestCase):
    pass


class TestStockLocal(ClassicHosts, stock.OpenvswitchMechanismLocalTestCase):
    pass


class TestStockFlat(ClassicHosts, stock.OpenvswitchMechanismFlatTestCase):
    pass


class TestStockVlan(ClassicHosts, stock.OpenvswitchMechanismVlanTestCase):
    pass


class TestStockGre(ClassicHosts, stock.OpenvswitchMechanismGreTestCase):
    pass


class TestStockSGDisabledLocal(ClassicHosts, stock.OpenvswitchMechanismSGDisabledLocalTestCase):
    pass


class TestStockFirewallUndefined(ClassicHosts, stock.OpenvswitchMechanismFirewallUndefinedTestCase):
    pass


class TestStockDPDK(ClassicHosts, stock.OpenvswitchMechanismDPDKTestCase):
    pass


class TestStockSRIOV(ClassicHosts, stock.OpenvswitchMechanismSRIOVTestCase):
    pass


class TestStockVnicTypes(ClassicHosts, stock.OpenvswitchMechVnicTypesTestCase):
    # The one intended difference: this driver also binds virtio-forwarder.
    supported_vnics = [
        *stock.OpenvswitchMechVnicTypesTestCase.supported_vnics,
        portbindings.VNIC_VIRTIO_FORWARDER,
    ]


class TestStockDeviceMappings(ClassicHosts, stock.OpenvswitchMechDeviceMappingsTestCase):
    pass


class TestStockCreateTap(ClassicHosts, stock.OpenvswitchMechanismCreateTapTestCase):
    pass


# --- every host a SmartNIC host: normal ports are still stock ----------------


class TestSmartNICHostHybridPlug(SmartNICHosts, stock.OpenvswitchMechanismHybridPlugTestCase):
    pass


class TestSmartNICHostGeneric(SmartNICHosts, stock.OpenvswitchMechanismGenericTestCase):
    pass


class TestSmartNICHostLocal(SmartNICHosts, stock.OpenvswitchMechanismLocalTestCase):
    pass


class TestSmartNICHostFlat(SmartNICHosts, stock.OpenvswitchMechanismFlatTestCase):
    pass


class TestSmartNICHostVlan(SmartNICHosts, stock.OpenvswitchMechanismVlanTestCase):
    pass


class TestSmartNICHostGre(SmartNICHosts, stock.OpenvswitchMechanismGreTestCase):
    pass


class TestSmartNICHostSGDisabledLocal(
    SmartNICHosts, stock.OpenvswitchMechanismSGDisabledLocalTestCase
):
    pass


class TestSmartNICHostSRIOV(SmartNICHosts, stock.OpenvswitchMechanismSRIOVTestCase):
    pass


class TestSmartNICHostCreateTap(SmartNICHosts, stock.OpenvswitchMechanismCreateTapTestCase):
    pass


class TestSmartNICHostDPDK(SmartNICHosts, stock.OpenvswitchMechanismDPDKTestCase):
    def test_get_vif_type(self) -> None:
        # Normal ports keep the stock answers (vhostuser on a DPDK agent, ovs
        # on a kernel one); a switchdev direct port on a SmartNIC host is the
        # intended difference: agilio_ovs where the stock driver says ovs.
        normal = base.FakePortContext(None, None, None)
        self.assertEqual(
            portbindings.VIF_TYPE_VHOST_USER, self.driver.get_vif_type(normal, self.AGENT, None)
        )
        self.assertEqual(
            portbindings.VIF_TYPE_VHOST_USER,
            self.driver.get_vif_type(normal, self.AGENT_SERVER, None),
        )
        self.assertEqual(
            portbindings.VIF_TYPE_OVS, self.driver.get_vif_type(normal, self.AGENT_SYSTEM, None)
        )
        direct = base.FakePortContext(
            None,
            None,
            None,
            vnic_type=portbindings.VNIC_DIRECT,
            profile={"capabilities": ["switchdev"]},
        )
        self.assertEqual(
            portbindings.VIF_TYPE_AGILIO_OVS, self.driver.get_vif_type(direct, self.AGENT, None)
        )
        # Without the capability nothing is accelerated (and bind_port would
        # not even get here: the port is the SR-IOV driver's).
        legacy = base.FakePortContext(None, None, None, vnic_type=portbindings.VNIC_DIRECT)
        self.assertEqual(
            portbindings.VIF_TYPE_OVS, self.driver.get_vif_type(legacy, self.AGENT, None)
        )


class TestSmartNICHostSwitchdevDirectIsAgilio(
    SmartNICHosts, stock.OpenvswitchMechanismBaseTestCase
):
    """The stock flat/vlan/local cases for a switchdev direct port on a SmartNIC
    host: bound on the same segment, same details, vif_type agilio_ovs."""

    VIF_TYPE = portbindings.VIF_TYPE_AGILIO_OVS

    def _bind(self, segments: list[dict[str, Any]]) -> base.FakePortContext:
        context = base.FakePortContext(
            self.AGENT_TYPE,
            self.AGENTS,
            segments,
            vnic_type=portbindings.VNIC_DIRECT,
            profile={"capabilities": ["switchdev"]},
        )
        self.driver.bind_port(context)
        return context

    def test_type_local(self) -> None:
        segments = base.AgentMechanismLocalTestCase.LOCAL_SEGMENTS
        self._check_bound(self._bind(segments), segments[1])

    def test_type_flat(self) -> None:
        segments = base.AgentMechanismFlatTestCase.FLAT_SEGMENTS
        self._check_bound(self._bind(segments), segments[1])

    def test_type_vlan(self) -> None:
        segments = base.AgentMechanismVlanTestCase.VLAN_SEGMENTS
        self._check_bound(self._bind(segments), segments[1])

    def test_type_gre(self) -> None:
        segments = base.AgentMechanismGreTestCase.GRE_SEGMENTS
        self._check_bound(self._bind(segments), segments[1])

    def test_bad_agents_do_not_bind(self) -> None:
        context = base.FakePortContext(
            self.AGENT_TYPE,
            self.AGENTS_BAD,
            base.AgentMechanismVlanTestCase.VLAN_SEGMENTS,
            vnic_type=portbindings.VNIC_DIRECT,
            profile={"capabilities": ["switchdev"]},
        )
        self.driver.bind_port(context)
        self._check_unbound(context)
