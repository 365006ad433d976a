"""Vendor-neutral os-vif port profiles for SmartNIC ports.

They are registered in os-vif's own object registry, so they serialise and
travel exactly like os-vif's built-in profiles. Both carry what the plugin needs
to plug the VF's representor into OVS as Neutron expects it.

Version history:
  VIFPortProfilePassthrough 1.0: initial version.
  VIFPortProfileForwarder 1.0: initial version.
"""

from __future__ import annotations

from os_vif.objects import vif as osv_vif
from oslo_versionedobjects import base, fields


class _RepresentorProfileMixin:
    # Fields shared by both profiles; declared once and merged into each
    # class's own ``fields`` below.
    common_fields = {
        #: Neutron port id, written to the OVS Interface as external_ids:iface-id.
        "interface_id": fields.UUIDField(),
        #: Wished name of the VF's representor; the plugin renames the
        #: representor to it on plug and restores the old name on unplug.
        "representor_name": fields.StringField(nullable=True),
        #: PCI address of the VF whose representor is plugged.
        "representor_address": fields.PCIAddressField(),
        #: Whether the VF is trusted (from the port's binding profile).
        "trusted": fields.BooleanField(default=False),
        #: MAC anti-spoofing on the VF (Neutron port security).
        "spoofchk": fields.BooleanField(default=True),
    }


@base.VersionedObjectRegistry.register
class VIFPortProfilePassthrough(osv_vif.VIFPortProfileBase, _RepresentorProfileMixin):
    """The VM gets the VF itself (libvirt hostdev); its representor goes on OVS."""

    # Version 1.0: Initial release
    VERSION = "1.0"

    fields = dict(_RepresentorProfileMixin.common_fields)


@base.VersionedObjectRegistry.register
class VIFPortProfileForwarder(osv_vif.VIFPortProfileBase, _RepresentorProfileMixin):
    """The VM gets a virtio NIC on a vhost-user socket; virtio-forwarder relays
    it to the VF, whose representor goes on OVS."""

    # Version 1.0: Initial release
    VERSION = "1.0"

    fields = dict(
        _RepresentorProfileMixin.common_fields,
        #: Driver the VF is bound to while virtio-forwarder relays it; None
        #: means the plugin's configured ``vfio_driver``.
        relay_driver=fields.StringField(nullable=True),
    )


__all__ = ["VIFPortProfilePassthrough", "VIFPortProfileForwarder"]
