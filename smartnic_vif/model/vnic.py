"""Neutron VNIC types, and what each one means on a SmartNIC compute node.

The list of types is Neutron's (``neutron_lib.api.definitions.portbindings``);
the set of types that get a PCI device and the device type asked for follow
Nova (``nova.network.model.VNIC_TYPES_SRIOV``, ``nova.pci.request.
DEVICE_TYPE_FOR_VNIC_TYPE``). Only three types have a plug mode here:

========================  ===============  ====================================
``binding:vnic_type``     plug mode        what the VM sees
========================  ===============  ====================================
``normal``                ``normal``       a tap device on OVS
``direct``                ``passthrough``  the VF itself (vfio-pci hostdev)
``virtio-forwarder``      ``forwarder``    a virtio NIC on a vhost-user socket
========================  ===============  ====================================

Everything else Neutron knows is refused with :class:`UnsupportedVnicType`,
which names the port and the type.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from smartnic_vif.model.errors import InvalidValue, UnsupportedVnicType

BINDING_VNIC_TYPE = "binding:vnic_type"
BINDING_PROFILE = "binding:profile"
BINDING_VIF_TYPE = "binding:vif_type"
BINDING_VIF_DETAILS = "binding:vif_details"

#: Network capability a VF has when its eswitch is in switchdev mode (Nova's
#: word for it, also what Neutron's OVS driver looks for in binding:profile).
CAPABILITY_SWITCHDEV = "switchdev"


class VnicType(StrEnum):
    """Every ``binding:vnic_type`` value the Neutron API accepts."""

    NORMAL = "normal"
    DIRECT = "direct"
    MACVTAP = "macvtap"
    BAREMETAL = "baremetal"
    DIRECT_PHYSICAL = "direct-physical"
    VIRTIO_FORWARDER = "virtio-forwarder"
    SMART_NIC = "smart-nic"
    VDPA = "vdpa"
    ACCELERATOR_DIRECT = "accelerator-direct"
    ACCELERATOR_DIRECT_PHYSICAL = "accelerator-direct-physical"
    REMOTE_MANAGED = "remote-managed"


class PlugMode(StrEnum):
    """How this project attaches a port to the VM and to OVS."""

    NORMAL = "normal"
    PASSTHROUGH = "passthrough"
    FORWARDER = "forwarder"


#: In Neutron's order.
VNIC_TYPES: tuple[VnicType, ...] = tuple(VnicType)

#: Types Nova makes a PCI request for (``VNIC_TYPES_SRIOV``). virtio-forwarder
#: is among them even though the guest sees virtio: the VF is still consumed.
PCI_VNIC_TYPES: frozenset[VnicType] = frozenset(
    {
        VnicType.DIRECT,
        VnicType.MACVTAP,
        VnicType.DIRECT_PHYSICAL,
        VnicType.VIRTIO_FORWARDER,
        VnicType.VDPA,
        VnicType.REMOTE_MANAGED,
    }
)

#: Nova's ``dev_type`` for the types that do not take an ordinary VF.
PCI_DEVICE_TYPE_FOR_VNIC: Mapping[VnicType, str] = {
    VnicType.DIRECT_PHYSICAL: "type-PF",
    VnicType.VDPA: "vdpa",
}

#: Types whose PCI device is a VF (a vDPA device is a VF with a vdpa netdev;
#: direct-physical takes the whole PF).
VF_VNIC_TYPES: frozenset[VnicType] = PCI_VNIC_TYPES - {VnicType.DIRECT_PHYSICAL}

#: Types whose device the guest gets directly (Nova's
#: ``VNIC_TYPES_DIRECT_PASSTHROUGH``); virtio-forwarder is not one.
DIRECT_PASSTHROUGH_VNIC_TYPES: frozenset[VnicType] = frozenset(
    {
        VnicType.DIRECT,
        VnicType.DIRECT_PHYSICAL,
        VnicType.ACCELERATOR_DIRECT,
        VnicType.ACCELERATOR_DIRECT_PHYSICAL,
        VnicType.REMOTE_MANAGED,
        VnicType.VDPA,
    }
)

PLUG_MODE_FOR_VNIC: Mapping[VnicType, PlugMode] = {
    VnicType.NORMAL: PlugMode.NORMAL,
    VnicType.DIRECT: PlugMode.PASSTHROUGH,
    VnicType.VIRTIO_FORWARDER: PlugMode.FORWARDER,
}


def parse_vnic_type(value: object, port_id: str | None = None) -> VnicType:
    """``value`` as a :class:`VnicType`; anything Neutron does not know is an
    :class:`UnsupportedVnicType` naming the port."""
    if isinstance(value, VnicType):
        return value
    if isinstance(value, str):
        try:
            return VnicType(value)
        except ValueError:
            pass
    known = ", ".join(VNIC_TYPES)
    raise UnsupportedVnicType(port_id, value, f"not a Neutron VNIC type (known: {known})")


def vnic_type_of_port(port: Mapping[str, object]) -> VnicType:
    """The port's VNIC type; Neutron's default ``normal`` when the key is absent."""
    port_id = port.get("id")
    return parse_vnic_type(
        port.get(BINDING_VNIC_TYPE, VnicType.NORMAL),
        port_id if isinstance(port_id, str) else None,
    )


def plug_mode_for(vnic_type: object, port_id: str | None = None) -> PlugMode:
    """The plug mode for a VNIC type, or :class:`UnsupportedVnicType`."""
    vt = parse_vnic_type(vnic_type, port_id)
    mode = PLUG_MODE_FOR_VNIC.get(vt)
    if mode is None:
        supported = ", ".join(PLUG_MODE_FOR_VNIC)
        raise UnsupportedVnicType(
            port_id, vt.value, f"known to Neutron but not accelerated here (supported: {supported})"
        )
    return mode


def needs_pci_device(vnic_type: VnicType) -> bool:
    """Whether Nova claims a PCI device (VF, PF or vDPA device) for the type."""
    return vnic_type in PCI_VNIC_TYPES


def needs_vf(vnic_type: VnicType) -> bool:
    """Whether the type consumes one SR-IOV virtual function."""
    return vnic_type in VF_VNIC_TYPES


def profile_capabilities(
    profile: Mapping[str, object], port_id: str | None = None
) -> tuple[str, ...]:
    """``binding:profile['capabilities']`` as a tuple of strings.

    Neutron stores whatever the user sent; a non-list here would otherwise be
    iterated character by character ("switchdev" in "switchdev" is True).
    """
    caps = profile.get("capabilities")
    if caps is None:
        return ()
    if not isinstance(caps, list | tuple) or not all(isinstance(c, str) for c in caps):
        field = f"{BINDING_PROFILE}.capabilities"
        if port_id:
            field = f"port {port_id} {field}"
        raise InvalidValue(field, caps, "expected a list of strings such as ['switchdev']")
    return tuple(caps)


def requires_switchdev(
    vnic_type: VnicType, profile: Mapping[str, object], port_id: str | None = None
) -> bool:
    """Whether the port's VF must sit on a switchdev eswitch.

    virtio-forwarder always plugs the VF's representor into OVS; a direct port
    does so when it asks for hardware offload, which Neutron's OVS driver
    recognises by ``switchdev`` in ``binding:profile['capabilities']``.
    """
    if vnic_type is VnicType.VIRTIO_FORWARDER:
        return True
    if vnic_type is VnicType.DIRECT:
        return CAPABILITY_SWITCHDEV in profile_capabilities(profile, port_id)
    return False


__all__ = [
    "BINDING_PROFILE",
    "BINDING_VIF_DETAILS",
    "BINDING_VIF_TYPE",
    "BINDING_VNIC_TYPE",
    "CAPABILITY_SWITCHDEV",
    "DIRECT_PASSTHROUGH_VNIC_TYPES",
    "PCI_DEVICE_TYPE_FOR_VNIC",
    "PCI_VNIC_TYPES",
    "PLUG_MODE_FOR_VNIC",
    "PlugMode",
    "VF_VNIC_TYPES",
    "VNIC_TYPES",
    "VnicType",
    "needs_pci_device",
    "needs_vf",
    "parse_vnic_type",
    "plug_mode_for",
    "profile_capabilities",
    "requires_switchdev",
    "vnic_type_of_port",
]
