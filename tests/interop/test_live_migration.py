"""Live migration between two simulated SmartNIC hosts, in Nova's order and
with Nova's own objects.

The source host is this process's simulated host (``plugin_env``); the
destination is another simulated host in a process and network namespace of
its own (``remote_host``), as two computes are. The VIFs come from Neutron
port dicts through Nova's ``_build_vif_model`` and ``nova_to_osvif_vif`` (see
``test_nova_vifs.py``). The migration is Nova's: a ``VIFMigrateData`` per
port holds the source VIF and the destination binding (whose profile's
``pci_slot`` names the destination VF), and it reaches the destination as
RPC carries it (``obj_to_primitive``). Each step is the call the libvirt
driver makes:

- ``pre_live_migration`` (destination): ``plug_vifs`` of ``get_dest_vif()``;
- ``_live_migration_operation`` (source): ``_detach_direct_passthrough_vifs``
  unplugs each direct port's source VIF; the domain XML goes through
  ``migration._update_vif_xml``;
- ``post_live_migration_at_destination``: a detached direct port is
  attached again, which plugs the (now active) destination binding's VIF;
- ``post_live_migration_at_source``: ``unplug_vifs`` of the source VIFs from
  the migrate data (a direct port's second source unplug);
- ``rollback_live_migration_at_destination``: ``destroy``, which unplugs the
  instance's network info, still the source binding's.

After each sequence the destination shows the port plugged and the source
is exactly as it was before the VM arrived (VFs' settings and drivers,
representors' names and flags, OVS ports, relays, journal).
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator
from typing import Any

import nova.objects
import os_vif
import pytest
from lxml import etree
from nova.network import model as nova_model
from nova.network import os_vif_util
from nova.objects import migrate_data as nova_migrate_data
from nova.virt.libvirt import migration
from nova.virt.libvirt import vif as libvirt_vif

from smartnic_vif.host import privileged
from smartnic_vif.model.inventory import VirtualFunction
from tests.fixtures.plugin import PluginEnv
from tests.fixtures.remote_host import RemoteHost, port_view
from tests.interop.test_nova_vifs import (
    NET_MTU,
    TENANT,
    NovaCompute,
    binding_profile,
    devname,
    neutron_port,
)

pytestmark = pytest.mark.root

SOURCE, DEST = "compute-1", "compute-2"
MODES = {"direct": ("passthrough", "nfp"), "virtio-forwarder": ("forwarder", "vfio-pci")}
# The guest's PCI address of its NIC, which a migration must keep.
GUEST_PCI = {"type": "pci", "domain": "0x0000", "bus": "0x00", "slot": "0x03", "function": "0x0"}


def vif_details(vnic_type: str, vhost_dir: str, port_id: str) -> dict[str, Any]:
    """vif_details of an agilio_ovs binding on a host whose sockets are in
    ``vhost_dir``."""
    details: dict[str, Any] = {
        "port_filter": False, "ovs_hybrid_plug": False, "bridge_name": "br-int",
        "datapath_type": "netdev",
    }
    if vnic_type == "virtio-forwarder":
        details.update(vhostuser_socket=socket_path(vhost_dir, port_id),
                       vhostuser_mode="server", vhostuser_ovs_plug=True)
    else:
        details["connectivity"] = "l2"
    return details


def socket_path(vhost_dir: str, port_id: str) -> str:
    return os.path.join(vhost_dir, ("vhu" + port_id)[:14])


@pytest.fixture
def source(plugin_env: PluginEnv) -> Iterator[PluginEnv]:
    """The source host; the test must leave it as it found it."""
    before = plugin_env.snapshot()
    yield plugin_env
    assert plugin_env.snapshot() == before, "the test left the source host changed"


@pytest.fixture
def dest(remote_host: RemoteHost) -> Iterator[RemoteHost]:
    """The destination host; the test must leave it as it found it."""
    before = remote_host.snapshot()
    yield remote_host
    assert remote_host.snapshot() == before, "the test left the destination host changed"


@pytest.fixture
def instance() -> Any:
    flavor = nova.objects.Flavor(
        name="m1.hugepages", flavorid="42", memory_mb=1024, vcpus=1, root_gb=1,
        ephemeral_gb=0, swap=0, extra_specs={"hw:mem_page_size": "large"})
    return nova.objects.Instance(
        id=4343, uuid=str(uuid.uuid4()), project_id=TENANT, user_id="demo",
        display_name="vm-migrating", flavor=flavor, system_metadata={}, image_ref="")


@pytest.fixture
def compute(nova_neutron_api: Any, instance: Any) -> NovaCompute:
    return NovaCompute(nova_neutron_api, instance)


class Migration:
    """One port of an instance on ``source`` moving to ``dest``: its Neutron
    port (the source binding), the VIFs Nova builds, and the migrate data."""

    def __init__(self, compute: NovaCompute, source: PluginEnv, dest: RemoteHost,
                 vnic_type: str, source_vf: VirtualFunction, dest_vf: VirtualFunction) -> None:
        self.compute, self.source, self.dest = compute, source, dest
        self.vnic_type = vnic_type
        self.mode, self.driver = MODES[vnic_type]
        self.source_vf, self.dest_vf = source_vf, dest_vf
        self.port_id = str(uuid.uuid4())
        port = neutron_port(source_vf, "agilio_ovs", vnic_type,
                            vif_details(vnic_type, source.sim.layout.vhost_dir, self.port_id),
                            compute.instance.uuid, host=SOURCE)
        port["id"] = self.port_id
        self.port = port
        self.source_vif = compute.vif_model(port)
        self.info = compute.osvif_instance()
        # The destination binding (Neutron's multiple port bindings), with the
        # destination's PCI claim in its profile.
        vif = nova_migrate_data.VIFMigrateData(
            port_id=self.port_id, vnic_type=vnic_type, vif_type="agilio_ovs", host=DEST,
            source_vif=self.source_vif)
        vif.vif_details = vif_details(vnic_type, dest.vhost_dir, self.port_id)
        vif.profile = binding_profile(dest_vf)
        self.migrate_data = nova.objects.LibvirtLiveMigrateData(vifs=[vif])

    # -- what Nova hands each host ---------------------------------------------------
    def rpc_migrate_data(self) -> Any:
        """The migrate data as the other compute gets it over RPC."""
        return nova.objects.LibvirtLiveMigrateData.obj_from_primitive(
            self.migrate_data.obj_to_primitive())

    def dest_vifs(self) -> list[Any]:
        """``pre_live_migration``'s network info: ``get_dest_vif()`` of each."""
        return [v.get_dest_vif() for v in self.rpc_migrate_data().vifs]

    def source_vifs(self) -> list[Any]:
        """The source VIFs kept in the migrate data (what the source unplugs)."""
        return list(nova_model.NetworkInfo.hydrate(
            [v.source_vif for v in self.migrate_data.vifs]))

    def activated_vif(self) -> nova_model.VIF:
        """The port's VIF once Nova activated the destination binding."""
        dest_port = dict(self.port, **{
            "binding:host_id": DEST,
            "binding:profile": binding_profile(self.dest_vf),
            "binding:vif_details": vif_details(self.vnic_type, self.dest.vhost_dir,
                                               self.port_id)})
        return self.compute.vif_model(dest_port)

    # -- what each host shows ------------------------------------------------------------
    def plugged_view(self, vf: VirtualFunction, vhost_dir: str) -> dict[str, Any]:
        name = devname(self.port)
        assert vf.representor is not None
        relays = ([[vf.address, socket_path(vhost_dir, self.port_id)]]
                  if self.mode == "forwarder" else [])
        return {
            "ovs": [{"name": name, "bridge": "br-int", "mtu_request": NET_MTU, "opened": True,
                     "external_ids": {"iface-id": self.port_id, "iface-status": "active",
                                      "attached-mac": self.port["mac_address"],
                                      "vm-uuid": self.compute.instance.uuid}}],
            "links": {name: [NET_MTU, True, True], vf.representor.name: None},
            "vf": {"mac": self.port["mac_address"], "vlan": 0, "qos": 0, "trust": False,
                   "spoofchk": True, "link_state": "auto"},
            "driver": self.driver,
            "relays": relays,
            "record": ["plugged", vf.address],
        }

    def assert_source_plugged(self) -> None:
        assert port_view(self.source, self.port_id, self.source_vf.address) == \
            self.plugged_view(self.source_vf, self.source.sim.layout.vhost_dir)

    def assert_dest_plugged(self) -> None:
        assert self.dest.port(self.port_id, self.dest_vf.address) == \
            self.plugged_view(self.dest_vf, self.dest.vhost_dir)

    # -- the libvirt driver's calls --------------------------------------------------------
    def boot_on_source(self) -> None:
        """The instance is spawned on the source: ``plug_vifs``."""
        os_vif.plug(os_vif_util.nova_to_osvif_vif(self.source_vif), self.info)

    def pre_live_migration(self) -> None:
        for vif in self.dest_vifs():
            self.dest.plug(os_vif_util.nova_to_osvif_vif(vif), self.info)

    def detach_direct_passthrough_vifs(self) -> None:
        """Source, before the migration starts: ``detach_interface`` of each
        direct port, which unplugs its source VIF."""
        for vif in self.source_vifs():
            if vif["vnic_type"] in nova_model.VNIC_TYPES_DIRECT_PASSTHROUGH:
                os_vif.unplug(os_vif_util.nova_to_osvif_vif(vif), self.info)

    def post_live_migration_at_destination(self) -> None:
        """``_reattach_instance_vifs``: ``attach_interface`` plugs each
        detached direct port again, from the instance's network info (the
        destination binding is active by now)."""
        vif = self.activated_vif()
        if vif["vnic_type"] in nova_model.VNIC_TYPES_DIRECT_PASSTHROUGH:
            self.dest.plug(os_vif_util.nova_to_osvif_vif(vif), self.info)

    def post_live_migration_at_source(self) -> None:
        for vif in self.source_vifs():
            os_vif.unplug(os_vif_util.nova_to_osvif_vif(vif), self.info)

    def rollback_live_migration_at_destination(self) -> None:
        """``destroy`` on the destination with the instance's network info,
        which still has the source binding."""
        vif = self.compute.vif_model(self.port)
        self.dest.unplug(os_vif_util.nova_to_osvif_vif(vif), self.info)

    def delete_on_dest(self) -> None:
        """The instance is deleted where it now runs."""
        self.dest.unplug(os_vif_util.nova_to_osvif_vif(self.activated_vif()), self.info)

    def delete_on_source(self) -> None:
        os_vif.unplug(os_vif_util.nova_to_osvif_vif(self.source_vif), self.info)

    # -- the domain XML ----------------------------------------------------------------------
    def get_vif_config(self) -> Any:
        """What the libvirt driver hands ``_update_vif_xml``."""
        instance = self.compute.instance
        return functools.partial(
            libvirt_vif.LibvirtGenericVIFDriver().get_config, instance=instance,
            image_meta=instance.image_meta, flavor=instance.flavor, virt_type="kvm")

    def source_domain(self) -> Any:
        """The running domain's XML on the source, with the guest's PCI address."""
        interface = etree.fromstring(self.get_vif_config()(vif=self.source_vif).to_xml())
        etree.SubElement(interface, "address", GUEST_PCI)
        domain = etree.fromstring(
            f"<domain type='kvm'><uuid>{self.compute.instance.uuid}</uuid><devices/></domain>")
        domain.find("devices").append(interface)
        return domain


@pytest.fixture
def migrating(compute: NovaCompute, source: PluginEnv, dest: RemoteHost) -> Iterator[Any]:
    """``migrating(vnic_type)``: a Migration from source VF 1/4 to
    destination VF 0/9 (different PCI addresses: nothing may work by their
    being the same). Each test ends with both hosts as they were; should
    one fail half-way, its port is unplugged on both afterwards, so that the
    next test starts clean."""
    made: list[Migration] = []

    def make(vnic_type: str) -> Migration:
        made.append(Migration(compute, source, dest, vnic_type, source.vf(1, 4), dest.vf(0, 9)))
        return made[-1]

    yield make
    for m in made:
        m.delete_on_source()
        m.delete_on_dest()


def test_virtio_forwarder_port_migrates_in_novas_order(
    source: PluginEnv, dest: RemoteHost, migrating: Any
) -> None:
    m = migrating("virtio-forwarder")
    before_source, before_dest = source.snapshot(), dest.snapshot()
    m.boot_on_source()
    m.assert_source_plugged()

    m.pre_live_migration()

    # Both are plugged while the guest runs on the source: the destination's
    # VF (from the destination profile's pci_slot) relays its own socket.
    m.assert_dest_plugged()
    m.assert_source_plugged()

    domain = migration._update_vif_xml(m.source_domain(), m.rpc_migrate_data(),
                                       m.get_vif_config())

    (interface,) = domain.findall("devices/interface")
    assert interface.get("type") == "vhostuser"
    assert interface.find("mac").get("address") == m.port["mac_address"]
    assert dict(interface.find("source").attrib) == {
        "type": "unix", "mode": "server",
        "path": socket_path(dest.vhost_dir, m.port_id)}
    assert interface.find("target").get("dev") == devname(m.port)
    assert dict(interface.find("address").attrib) == GUEST_PCI

    m.post_live_migration_at_source()

    assert source.snapshot() == before_source
    m.assert_dest_plugged()

    m.delete_on_dest()
    assert dest.snapshot() == before_dest


@pytest.mark.parametrize("mac_before", ["another", "the port's"])
def test_direct_port_migrates_in_novas_order(
    source: PluginEnv, dest: RemoteHost, migrating: Any, mac_before: str
) -> None:
    m = migrating("direct")
    vf = m.source_vf
    # The source VF had settings of its own before the VM arrived, its MAC
    # included: another one, or the port's (libvirt sets a hostdev
    # interface's MAC on the VF itself).
    mac = m.port["mac_address"] if mac_before == "the port's" else "fa:16:3e:77:01:04"
    privileged.set_vf(vf.pf_address, vf.index, {"mac": mac, "vlan": 11, "trust": True})
    try:
        before_source, before_dest = source.snapshot(), dest.snapshot()
        m.boot_on_source()
        m.assert_source_plugged()

        m.pre_live_migration()
        m.assert_dest_plugged()
        m.assert_source_plugged()

        m.detach_direct_passthrough_vifs()
        assert source.snapshot() == before_source
        plugged_dest = dest.snapshot()

        m.post_live_migration_at_destination()  # plugged already: nothing changes
        assert dest.snapshot() == plugged_dest
        m.assert_dest_plugged()

        m.post_live_migration_at_source()  # the second source unplug: no journal

        assert source.snapshot() == before_source
        assert source.vf_settings(vf.address) == {
            "mac": mac, "vlan": 11, "qos": 0, "trust": True,
            "spoofchk": True, "link_state": "auto"}
        assert dest.snapshot() == plugged_dest

        m.delete_on_dest()
        assert dest.snapshot() == before_dest
    finally:
        privileged.set_vf(vf.pf_address, vf.index,
                          {"mac": "00:00:00:00:00:00", "vlan": 0, "trust": False})


@pytest.mark.parametrize("vnic_type", ["virtio-forwarder", "direct"])
def test_rollback_at_the_destination_leaves_the_source_plugged(
    source: PluginEnv, dest: RemoteHost, migrating: Any, vnic_type: str
) -> None:
    m = migrating(vnic_type)
    before_source, before_dest = source.snapshot(), dest.snapshot()
    m.boot_on_source()
    plugged_source = source.snapshot()

    m.pre_live_migration()
    m.assert_dest_plugged()
    # The migration fails before the source detached anything.
    m.rollback_live_migration_at_destination()

    assert dest.snapshot() == before_dest
    assert source.snapshot() == plugged_source
    m.assert_source_plugged()

    m.delete_on_source()
    assert source.snapshot() == before_source
