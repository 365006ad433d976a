"""From a bound Neutron port to the os-vif VIF object that plugs it.

Two flavours:

* ours (``upstream=False``, plugin ``smartnic``): normal ports become
  ``VIFOpenVSwitch`` (``VIFBridge`` with hybrid plug), direct ports
  ``VIFHostDevice`` with :class:`VIFPortProfilePassthrough`, virtio-forwarder
  ports ``VIFVHostUser`` with :class:`VIFPortProfileForwarder`. The profiles
  carry trust and spoof checking, which the stock representor profile cannot.
* upstream (``upstream=True``): exactly what Nova's ``nova_to_osvif_vif``
  emits for the port's ``binding:vif_type`` ``agilio_ovs`` (plugin
  ``agilio_ovs``, ``VIFPortProfileOVSRepresentor`` plus a
  ``DatapathOffloadRepresentor``) or ``ovs``, so a host running stock Nova and a
  host running this library hand the plugin identical objects.

Both build the os-vif ``Network`` the way Nova builds it from the port, its
network and its subnets. Nothing here reads the host; the VF is passed in
(chosen by :mod:`~smartnic_vif.decisions.selection`) or taken from
``binding:profile['pci_slot']``, where Nova writes its claim.
"""

from __future__ import annotations

import ipaddress
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import os_vif.objects
from os_vif.objects import fields as osv_fields
from os_vif.objects import fixed_ip as osv_fixed_ip
from os_vif.objects import instance_info as osv_instance_info
from os_vif.objects import network as osv_network
from os_vif.objects import route as osv_route
from os_vif.objects import subnet as osv_subnet
from os_vif.objects import vif as osv_vif
from oslo_utils import uuidutils

from smartnic_vif.decisions.pci_request import binding_profile, trusted_from_profile
from smartnic_vif.model.errors import InvalidValue
from smartnic_vif.model.inventory import VirtualFunction
from smartnic_vif.model.types import ifname, mtu, pci_address, unicast_mac
from smartnic_vif.model.vnic import (
    BINDING_VIF_DETAILS,
    BINDING_VIF_TYPE,
    PlugMode,
    VnicType,
    plug_mode_for,
    vnic_type_of_port,
)
from smartnic_vif.osvif.objects import VIFPortProfileForwarder, VIFPortProfilePassthrough

# Nova looks these classes up by name in the os-vif registry.
os_vif.objects.register_all()

PLUGIN = "smartnic"
UPSTREAM_PLUGIN = "agilio_ovs"
VIF_TYPE_OVS = "ovs"
VIF_TYPE_AGILIO_OVS = "agilio_ovs"
#: vif_types that mean "not bound" (Nova has no conversion for them either).
UNBOUND_VIF_TYPES = ("unbound", "binding_failed")
DEFAULT_BRIDGE = "br-int"
#: Linux interface names Nova derives from a port id are cut to this length.
NIC_NAME_LEN = 14


def devname_for_port(port_id: str) -> str:
    """The tap/representor name Nova gives a port: ``tap`` + id, 14 characters."""
    return ("tap" + port_id)[:NIC_NAME_LEN]


def hybrid_bridge_name(port_id: str) -> str:
    return ("qbr" + port_id)[:NIC_NAME_LEN]


def instance_info(
    uuid: str, name: str, project_id: str | None = None
) -> osv_instance_info.InstanceInfo:
    """The os-vif InstanceInfo for ``os_vif.plug``, as Nova fills it."""
    if not uuidutils.is_uuid_like(uuid):
        raise InvalidValue("instance uuid", uuid, "expected a UUID")
    if not isinstance(name, str) or not name:
        raise InvalidValue("instance name", name, "expected a non-empty string")
    info = osv_instance_info.InstanceInfo(uuid=uuid, name=name)
    if project_id is not None:
        info.project_id = project_id
    return info


def _port_id(port: Mapping[str, Any]) -> str:
    port_id = port.get("id")
    if not isinstance(port_id, str) or not uuidutils.is_uuid_like(port_id):
        raise InvalidValue("port id", port_id, "expected the Neutron port UUID")
    return port_id


def _vif_details(port: Mapping[str, Any], port_id: str) -> Mapping[str, Any]:
    vif_type = port.get(BINDING_VIF_TYPE)
    if not isinstance(vif_type, str) or vif_type in UNBOUND_VIF_TYPES:
        raise InvalidValue(
            f"port {port_id} {BINDING_VIF_TYPE}",
            vif_type,
            "the port is not bound to this host (bind it first: binding:host_id)",
        )
    details = port.get(BINDING_VIF_DETAILS)
    if not isinstance(details, Mapping):
        raise InvalidValue(
            f"port {port_id} {BINDING_VIF_DETAILS}",
            details,
            "missing: the port's binding carries no details",
        )
    return details


def _bridge(details: Mapping[str, Any], port_id: str, default_bridge: str) -> str:
    bridge = details.get("bridge_name", default_bridge)
    if not isinstance(bridge, str) or not bridge:
        raise InvalidValue(f"port {port_id} {BINDING_VIF_DETAILS}.bridge_name", bridge,
                           "expected a bridge name")
    # Nova cuts bridge names to the length of a Linux interface name.
    return ifname(bridge[:NIC_NAME_LEN], f"port {port_id} {BINDING_VIF_DETAILS}.bridge_name")


def _subnet_objects(
    port: Mapping[str, Any], subnets: Sequence[Mapping[str, Any]] | None
) -> osv_subnet.SubnetList:
    """os-vif subnets of the port, the way Nova builds them from Neutron's."""
    fixed_ips = port.get("fixed_ips") or []
    if not subnets or not fixed_ips:
        # A port without fixed IPs has no subnets in Nova's model either.
        return osv_subnet.SubnetList(objects=[])
    wanted = {ip.get("subnet_id") for ip in fixed_ips}
    out = []
    for subnet in subnets:
        if subnet.get("id") not in wanted:
            continue
        cidr = subnet.get("cidr")
        try:
            network = ipaddress.ip_network(cidr) if cidr is not None else None
        except (TypeError, ValueError):
            raise InvalidValue(f"subnet {subnet.get('id')} cidr", cidr, "expected a CIDR") from None
        ips = [
            osv_fixed_ip.FixedIP(address=ip["ip_address"], floating_ips=[])
            for ip in fixed_ips
            if network is not None and ipaddress.ip_address(ip["ip_address"]) in network
        ]
        routes = [
            osv_route.Route(cidr=route["destination"], gateway=route["nexthop"])
            for route in subnet.get("host_routes") or []
        ]
        obj = osv_subnet.Subnet(
            dns=list(subnet.get("dns_nameservers") or []),
            ips=osv_fixed_ip.FixedIPList(objects=ips),
            routes=osv_route.RouteList(objects=routes),
        )
        if cidr is not None:
            obj.cidr = cidr
        if subnet.get("gateway_ip") is not None:
            obj.gateway = subnet["gateway_ip"]
        out.append(obj)
    return osv_subnet.SubnetList(objects=out)


def build_network(
    port: Mapping[str, Any],
    network: Mapping[str, Any] | None = None,
    subnets: Sequence[Mapping[str, Any]] | None = None,
    *,
    bridge: str | None = None,
) -> osv_network.Network:
    """The os-vif Network of a port: id, bridge, label (network name), MTU, subnets.

    ``network`` and ``subnets`` are Neutron's dicts; without them the label,
    MTU and subnets are left out, as Nova does for a network it does not know.
    """
    port_id = _port_id(port)
    network_id = port.get("network_id")
    if not isinstance(network_id, str) or not uuidutils.is_uuid_like(network_id):
        raise InvalidValue(f"port {port_id} network_id", network_id, "expected a network UUID")
    obj = osv_network.Network(
        id=network_id,
        bridge_interface=None,
        subnets=_subnet_objects(port, subnets),
    )
    if bridge is not None:
        obj.bridge = bridge
    if network is not None:
        if network.get("name") is not None:
            obj.label = network["name"]
        if network.get("mtu") is not None:
            obj.mtu = mtu(network["mtu"], f"network {network_id} mtu")
    return obj


def _vf_address(
    port: Mapping[str, Any], port_id: str, vf: VirtualFunction | None
) -> str:
    field = f"port {port_id} binding:profile.pci_slot"
    slot = binding_profile(port).get("pci_slot")
    if vf is not None:
        if slot is not None and pci_address(slot, field) != vf.address:
            # Nova claimed one VF and we would plug another: refuse rather than
            # hand the guest a device its flavor's claim does not cover.
            raise InvalidValue(field, slot, f"differs from the chosen VF {vf.address}")
        return vf.address
    if slot is None:
        raise InvalidValue(field, None, "missing: no VF given and Nova has not claimed one")
    return pci_address(slot, field)


def _vhostuser(details: Mapping[str, Any], port_id: str) -> tuple[str, str]:
    path = details.get("vhostuser_socket")
    field = f"port {port_id} {BINDING_VIF_DETAILS}"
    if not isinstance(path, str) or not path.startswith("/"):
        raise InvalidValue(
            f"{field}.vhostuser_socket", path, "missing or not an absolute socket path"
        )
    mode = details.get("vhostuser_mode", osv_fields.VIFVHostUserMode.SERVER)
    if mode not in osv_fields.VIFVHostUserMode.ALL:
        raise InvalidValue(f"{field}.vhostuser_mode", mode, "expected client or server")
    return path, mode


def _is_active(port: Mapping[str, Any]) -> bool:
    # Nova: an administratively down port never becomes ACTIVE, so it is not
    # waited for.
    return port.get("admin_state_up") is False or port.get("status") == "ACTIVE"


def _ovs_profile(
    details: Mapping[str, Any], port_id: str
) -> osv_vif.VIFPortProfileOpenVSwitch:
    profile = osv_vif.VIFPortProfileOpenVSwitch(
        interface_id=port_id, datapath_type=details.get("datapath_type")
    )
    profile.create_tap = bool(details.get("ovs_create_tap", False))
    return profile


def _representor_offload(devname: str, address: str) -> osv_vif.DatapathOffloadRepresentor:
    return osv_vif.DatapathOffloadRepresentor(
        representor_name=devname, representor_address=address
    )


def build_vif(
    port: Mapping[str, Any],
    *,
    network: Mapping[str, Any] | None = None,
    subnets: Sequence[Mapping[str, Any]] | None = None,
    vf: VirtualFunction | None = None,
    devname: str | None = None,
    preserve_on_delete: bool = False,
    delegate_create: bool = True,
    default_bridge: str = DEFAULT_BRIDGE,
    upstream: bool = False,
) -> osv_vif.VIFBase:
    """The os-vif VIF for a bound Neutron port.

    ``port`` is Neutron's port dict (``id``, ``mac_address``, ``network_id``,
    ``binding:vnic_type``, ``binding:vif_type``, ``binding:vif_details``,
    ``binding:profile``, ...). ``vf`` is the chosen VF for direct and
    virtio-forwarder ports; without it ``binding:profile['pci_slot']`` is used.
    ``delegate_create`` asks the plugin (not libvirt) to create the OVS port of
    a normal port, as Nova does. ``upstream`` selects Nova's own conversion.
    """
    if not isinstance(port, Mapping):
        raise InvalidValue("port", port, "expected a Neutron port dict")
    port_id = _port_id(port)
    mac = unicast_mac(port.get("mac_address"), f"port {port_id} mac_address")
    details = _vif_details(port, port_id)
    vnic_type = vnic_type_of_port(port)
    mode = plug_mode_for(vnic_type, port_id)
    name = ifname(devname or devname_for_port(port_id), f"port {port_id} devname")
    vif_type = port[BINDING_VIF_TYPE]
    if upstream:
        if vif_type not in (VIF_TYPE_AGILIO_OVS, VIF_TYPE_OVS):
            raise InvalidValue(
                f"port {port_id} {BINDING_VIF_TYPE}", vif_type,
                "the upstream conversion covers agilio_ovs and ovs",
            )
        if vif_type == VIF_TYPE_OVS and mode is PlugMode.FORWARDER:
            # Nova would emit a plain OVS VIF and the guest would get no
            # accelerated port at all.
            raise InvalidValue(
                f"port {port_id} {BINDING_VIF_TYPE}", vif_type,
                "a virtio-forwarder port needs vif_type agilio_ovs",
            )
    bridge = _bridge(details, port_id, default_bridge)
    net = build_network(port, network, subnets, bridge=bridge)
    common: dict[str, Any] = {
        "id": port_id,
        "address": mac,
        "network": net,
        "has_traffic_filtering": bool(details.get("port_filter", False)),
        "preserve_on_delete": preserve_on_delete,
        "active": _is_active(port),
    }

    if mode is PlugMode.NORMAL:
        plugin = VIF_TYPE_OVS if upstream else PLUGIN
        profile = _ovs_profile(details, port_id)
        if details.get("ovs_hybrid_plug", False):
            return osv_vif.VIFBridge(
                **common, plugin=plugin, port_profile=profile, vif_name=name,
                bridge_name=hybrid_bridge_name(port_id),
            )
        profile.create_port = delegate_create
        return osv_vif.VIFOpenVSwitch(
            **common, plugin=plugin, port_profile=profile, vif_name=name, bridge_name=bridge
        )

    address = _vf_address(port, port_id, vf)
    profile_obj: osv_vif.VIFPortProfileBase
    if upstream:
        plugin = UPSTREAM_PLUGIN if vif_type == VIF_TYPE_AGILIO_OVS else VIF_TYPE_OVS
        with warnings.catch_warnings():
            # os-vif marks this profile pending deprecation; Nova still sends it.
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            profile_obj = osv_vif.VIFPortProfileOVSRepresentor(
                interface_id=port_id, representor_name=name, representor_address=address
            )
    else:
        plugin = PLUGIN
        trusted = trusted_from_profile(binding_profile(port), port_id)
        profile_cls = (
            VIFPortProfilePassthrough if mode is PlugMode.PASSTHROUGH else VIFPortProfileForwarder
        )
        profile_obj = profile_cls(
            interface_id=port_id,
            representor_name=name,
            representor_address=address,
            trusted=bool(trusted),
            spoofchk=port.get("port_security_enabled", True) is not False,
        )
        if mode is PlugMode.FORWARDER:
            profile_obj.relay_driver = None
    profile_obj.datapath_offload = _representor_offload(name, address)

    if mode is PlugMode.PASSTHROUGH:
        return osv_vif.VIFHostDevice(
            **common, plugin=plugin, port_profile=profile_obj,
            dev_type=osv_fields.VIFHostDeviceDevType.ETHERNET, dev_address=address,
        )
    assert vnic_type is VnicType.VIRTIO_FORWARDER
    path, vhost_mode = _vhostuser(details, port_id)
    return osv_vif.VIFVHostUser(
        **common, plugin=plugin, port_profile=profile_obj, vif_name=name, path=path,
        mode=vhost_mode,
    )


__all__ = [
    "DEFAULT_BRIDGE",
    "PLUGIN",
    "UPSTREAM_PLUGIN",
    "build_network",
    "build_vif",
    "devname_for_port",
    "hybrid_bridge_name",
    "instance_info",
]
