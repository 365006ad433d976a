"""libvirt ``<interface>`` XML for each plug mode, and what the domain must grant.

Built with :mod:`xml.etree.ElementTree`, so every value is escaped and no
caller-supplied text can add elements or attributes. Values are validated
(MAC, PCI address, interface names, socket path) before they reach the tree.

* normal: ``type='ethernet'`` with a target tap (the plugin creates the OVS
  port), or ``type='bridge'`` with an ``openvswitch`` virtualport (libvirt
  creates it);
* passthrough: ``type='hostdev' managed='yes'``: libvirt binds the VF to
  vfio-pci and sets its MAC (and VLAN) itself;
* forwarder: ``type='vhostuser'``: a virtio NIC on a unix socket that
  virtio-forwarder relays to the VF. QEMU's vhost-user backend reads guest
  memory directly, so the domain needs shared memory (:func:`domain_requirements`).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from os_vif.objects import vif as osv_vif
from oslo_utils import uuidutils

from smartnic_vif.model.errors import InvalidValue
from smartnic_vif.model.types import PciAddress, ifname, mac_address, vlan_id
from smartnic_vif.model.types import mtu as valid_mtu
from smartnic_vif.model.vnic import PlugMode

VHOSTUSER_MODES = ("client", "server")
# QEMU's virtio-net accepts at most this many queue pairs.
MAX_QUEUES = 256


def _queues(value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_QUEUES:
        raise InvalidValue("queues", value, f"expected an integer 1-{MAX_QUEUES}")
    return value


def _to_string(element: ET.Element) -> str:
    ET.indent(element)
    return ET.tostring(element, encoding="unicode")


def _interface(kind: str, mac: str, **attrs: str) -> ET.Element:
    iface = ET.Element("interface", {"type": kind, **attrs})
    ET.SubElement(iface, "mac", {"address": mac_address(mac, "mac")})
    return iface


def _add_mtu(iface: ET.Element, value: int | None) -> None:
    if value is not None:
        ET.SubElement(iface, "mtu", {"size": str(valid_mtu(value))})


def _add_virtio(iface: ET.Element, queues: int | None) -> None:
    ET.SubElement(iface, "model", {"type": "virtio"})
    q = _queues(queues)
    # One queue pair is virtio's default; libvirt wants the element only for
    # multiqueue.
    if q is not None and q > 1:
        ET.SubElement(iface, "driver", {"queues": str(q)})


def normal_interface(
    mac: str,
    target_dev: str,
    *,
    bridge: str | None = None,
    interface_id: str | None = None,
    mtu: int | None = None,
    queues: int | None = None,
) -> str:
    """A tap-backed virtio NIC.

    Without ``bridge``: ``type='ethernet'`` (the tap is created by libvirt and
    plugged into OVS by the os-vif plugin). With ``bridge``: ``type='bridge'``
    with an openvswitch virtualport whose ``interfaceid`` is the Neutron port id.
    """
    if bridge is None:
        iface = _interface("ethernet", mac)
    else:
        if not isinstance(interface_id, str) or not uuidutils.is_uuid_like(interface_id):
            raise InvalidValue(
                "interface_id", interface_id, "an OVS bridge port needs the Neutron port UUID"
            )
        iface = _interface("bridge", mac)
        ET.SubElement(iface, "source", {"bridge": ifname(bridge, "bridge")})
        vport = ET.SubElement(iface, "virtualport", {"type": "openvswitch"})
        ET.SubElement(vport, "parameters", {"interfaceid": interface_id})
    ET.SubElement(iface, "target", {"dev": ifname(target_dev, "target_dev")})
    _add_virtio(iface, queues)
    _add_mtu(iface, mtu)
    return _to_string(iface)


def passthrough_interface(mac: str, vf_address: str, *, vlan: int | None = None) -> str:
    """The VF itself, handed to the guest; libvirt manages the vfio-pci binding."""
    addr = PciAddress.parse(vf_address, "vf_address")
    iface = _interface("hostdev", mac, managed="yes")
    source = ET.SubElement(iface, "source")
    ET.SubElement(
        source,
        "address",
        {
            "type": "pci",
            "domain": f"0x{addr.domain:04x}",
            "bus": f"0x{addr.bus:02x}",
            "slot": f"0x{addr.slot:02x}",
            "function": f"0x{addr.function:x}",
        },
    )
    if vlan is not None and vlan_id(vlan) != 0:
        vlan_el = ET.SubElement(iface, "vlan")
        ET.SubElement(vlan_el, "tag", {"id": str(vlan)})
    return _to_string(iface)


def forwarder_interface(
    mac: str,
    socket_path: str,
    *,
    mode: str = "server",
    queues: int | None = None,
    mtu: int | None = None,
) -> str:
    """A virtio NIC on a vhost-user unix socket. ``mode`` is QEMU's side of the
    socket (``server``: QEMU listens, virtio-forwarder connects)."""
    if not isinstance(socket_path, str) or not socket_path.startswith("/") or "\0" in socket_path:
        raise InvalidValue("socket_path", socket_path, "expected an absolute socket path")
    if mode not in VHOSTUSER_MODES:
        raise InvalidValue("mode", mode, "expected client or server")
    iface = _interface("vhostuser", mac)
    ET.SubElement(iface, "source", {"type": "unix", "path": socket_path, "mode": mode})
    _add_virtio(iface, queues)
    _add_mtu(iface, mtu)
    return _to_string(iface)


def interface_for_vif(vif: osv_vif.VIFBase, *, queues: int | None = None) -> str:
    """The ``<interface>`` for an os-vif VIF built by :mod:`vif_builder`."""
    if not isinstance(vif, osv_vif.VIFBase):
        raise InvalidValue("vif", type(vif).__name__, "no libvirt interface for this VIF class")
    net = vif.network if "network" in vif else None
    net_mtu = net.mtu if net is not None and "mtu" in net else None
    if isinstance(vif, osv_vif.VIFHostDevice):
        return passthrough_interface(vif.address, vif.dev_address)
    if isinstance(vif, osv_vif.VIFVHostUser):
        return forwarder_interface(vif.address, vif.path, mode=vif.mode, queues=queues,
                                   mtu=net_mtu)
    if isinstance(vif, osv_vif.VIFOpenVSwitch):
        profile = vif.port_profile
        if profile.create_port:
            return normal_interface(vif.address, vif.vif_name, mtu=net_mtu, queues=queues)
        return normal_interface(
            vif.address, vif.vif_name, bridge=vif.bridge_name,
            interface_id=profile.interface_id, mtu=net_mtu, queues=queues,
        )
    if isinstance(vif, osv_vif.VIFBridge):
        # Hybrid plug: the tap goes on a Linux bridge that the plugin links to OVS.
        iface = _interface("bridge", vif.address)
        ET.SubElement(iface, "source", {"bridge": ifname(vif.bridge_name, "bridge_name")})
        ET.SubElement(iface, "target", {"dev": ifname(vif.vif_name, "vif_name")})
        _add_virtio(iface, queues)
        _add_mtu(iface, net_mtu)
        return _to_string(iface)
    raise InvalidValue("vif", type(vif).__name__, "no libvirt interface for this VIF class")


@dataclass(frozen=True)
class DomainRequirements:
    """What a plug mode needs from the rest of the domain definition."""

    mode: PlugMode
    shared_memory: bool = False  # guest RAM must be mappable by another process
    hugepages_sufficient: bool = False  # hugepage backing (shared) also satisfies it
    iommu: bool = False  # host IOMMU on, for vfio-pci
    notes: tuple[str, ...] = field(default=())

    def memory_backing(self, *, hugepages: bool = False) -> ET.Element | None:
        """``<memoryBacking>`` granting what the mode needs, or None.

        ``hugepages``: back guest RAM with hugepages (shared); otherwise memfd,
        which gives shareable memory without reserving hugepages.
        """
        if not self.shared_memory:
            return None
        backing = ET.Element("memoryBacking")
        if hugepages:
            ET.SubElement(backing, "hugepages")
        else:
            ET.SubElement(backing, "source", {"type": "memfd"})
        ET.SubElement(backing, "access", {"mode": "shared"})
        return backing

    def to_xml(self, *, hugepages: bool = False) -> str:
        """The snippet to merge into ``<domain>`` ("" when nothing is needed)."""
        backing = self.memory_backing(hugepages=hugepages)
        return "" if backing is None else _to_string(backing)


def domain_requirements(mode: PlugMode | str) -> DomainRequirements:
    """Domain-level needs of a plug mode, as data and (``to_xml``) as XML."""
    try:
        plug_mode = PlugMode(mode)
    except ValueError:
        raise InvalidValue("mode", mode, "expected normal, passthrough or forwarder") from None
    if plug_mode is PlugMode.FORWARDER:
        return DomainRequirements(
            plug_mode,
            shared_memory=True,
            hugepages_sufficient=True,
            notes=(
                "vhost-user: virtio-forwarder maps guest RAM, so memory must be shared: "
                "<memoryBacking><access mode='shared'/></memoryBacking> with a memfd or "
                "hugepage source (flavor hw:mem_page_size=large also gives it)",
            ),
        )
    if plug_mode is PlugMode.PASSTHROUGH:
        return DomainRequirements(
            plug_mode,
            iommu=True,
            notes=("vfio-pci needs the IOMMU enabled on the host (intel_iommu=on / amd_iommu)",),
        )
    return DomainRequirements(plug_mode)


__all__ = [
    "DomainRequirements",
    "domain_requirements",
    "forwarder_interface",
    "interface_for_vif",
    "normal_interface",
    "passthrough_interface",
]
