"""The driver as neutron-server and oslo-config-generator find it: entry points
and the ``[smartnic_ovs]`` options."""

from __future__ import annotations

from pathlib import Path

import pytest
from neutron.conf.plugins.ml2 import config as ml2_config
from neutron.plugins.ml2 import managers
from neutron.plugins.ml2.drivers.mech_sriov.mech_driver import mech_driver as sriov
from neutron.tests.unit.plugins.ml2 import _test_mech_agent as base
from neutron_lib.api.definitions import portbindings
from oslo_config import cfg, generator

from smartnic_vif.neutron import config
from smartnic_vif.neutron.mech_driver import SmartNICOVSMechanismDriver


class TestML2LoadsTheDriver(base.AgentMechanismBaseTestCase):
    def test_mechanism_manager_loads_smartnic_ovs_beside_sriovnicswitch(self) -> None:
        # What neutron-server does with [ml2] mechanism_drivers: stevedore
        # finds the entry point of the installed package and builds the driver.
        ml2_config.register_ml2_plugin_opts()
        cfg.CONF.set_override("mechanism_drivers", ["smartnic_ovs", "sriovnicswitch"], "ml2")
        manager = managers.MechanismManager()
        self.assertEqual(["smartnic_ovs", "sriovnicswitch"], manager.names())
        ours = manager.mech_drivers["smartnic_ovs"].obj
        self.assertIsInstance(ours, SmartNICOVSMechanismDriver)
        self.assertIn(portbindings.VNIC_VIRTIO_FORWARDER, ours.supported_vnic_types)
        # The legacy SR-IOV driver keeps the types this driver leaves alone.
        legacy = manager.mech_drivers["sriovnicswitch"].obj
        self.assertIsInstance(legacy, sriov.SriovNicSwitchMechanismDriver)
        self.assertIn(portbindings.VNIC_MACVTAP, legacy.supported_vnic_types)


def test_list_opts() -> None:
    ((group, opts),) = config.list_opts()
    assert group == "smartnic_ovs"
    assert [o.name for o in opts] == [
        "smartnic_hosts",
        "smartnic_agent_extension",
        "vnic_type_prohibit_list",
        "vhostuser_socket_dir",
        "vhostuser_mode",
    ]
    defaults = {o.name: o.default for o in opts}
    assert defaults["vhostuser_mode"] == "server"
    assert defaults["vhostuser_socket_dir"] == "/var/lib/vhost_sockets"
    assert defaults["smartnic_hosts"] == []


def test_register_opts_is_idempotent_and_reads_a_config_file(tmp_path: Path) -> None:
    conf = cfg.ConfigOpts()
    config.register_opts(conf)
    config.register_opts(conf)
    ini = tmp_path / "ml2_conf.ini"
    ini.write_text(
        "[smartnic_ovs]\n"
        "smartnic_hosts = compute-sn-1, compute-sn-2\n"
        "vnic_type_prohibit_list = vdpa\n"
        "vhostuser_mode = client\n"
    )
    conf(args=["--config-file", str(ini)])
    assert conf.smartnic_ovs.smartnic_hosts == ["compute-sn-1", "compute-sn-2"]
    assert conf.smartnic_ovs.vnic_type_prohibit_list == ["vdpa"]
    assert conf.smartnic_ovs.vhostuser_mode == "client"


def test_oslo_config_generator_namespace(tmp_path: Path) -> None:
    # Same as `oslo-config-generator --namespace smartnic_vif.neutron`; needs
    # the package installed (pip install -e .) for the entry point.
    # generator.main() minus its logging.basicConfig(), a process-wide change.
    out = tmp_path / "smartnic_ovs.conf.sample"
    conf = cfg.ConfigOpts()
    generator.register_cli_opts(conf)
    conf(args=["--namespace", "smartnic_vif.neutron", "--output-file", str(out)])
    generator.generate(conf)
    text = out.read_text()
    assert "[smartnic_ovs]" in text
    for line in (
        "#smartnic_hosts =",
        "#smartnic_agent_extension = <None>",
        "#vnic_type_prohibit_list =",
        "#vhostuser_socket_dir = /var/lib/vhost_sockets",
        "#vhostuser_mode = server",
    ):
        assert line in text.splitlines(), line


@pytest.mark.parametrize("value", ["server", "client"])
def test_vhostuser_mode_choices(value: str) -> None:
    conf = cfg.ConfigOpts()
    config.register_opts(conf)
    conf.set_override("vhostuser_mode", value, group=config.GROUP)
    conf(args=[])
    assert conf.smartnic_ovs.vhostuser_mode == value
