"""PCI requests for Neutron ports: which device a port needs before it can be plugged.

This mirrors what Nova's ``API.create_resource_requests`` asks the PCI tracker
for (one request of count 1 per port whose VNIC type needs a device) and adds
what Nova cannot express: the *capability* the device must have. Upstream Nova
cannot tell a VF on an OVS-offload (switchdev) eswitch from a legacy SR-IOV VF
at scheduling time; this project can, so an accelerated port asks for
``switchdev`` and never lands on a legacy VF.

:meth:`PortPciRequest.to_nova_spec` gives the part Nova shares, in Nova's own
format (tag values as strings, because Nova compares tags as lowercase strings).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from oslo_utils import strutils

from smartnic_vif.model.errors import InvalidValue
from smartnic_vif.model.vnic import (
    BINDING_PROFILE,
    CAPABILITY_SWITCHDEV,
    PCI_DEVICE_TYPE_FOR_VNIC,
    VnicType,
    needs_pci_device,
    requires_switchdev,
    vnic_type_of_port,
)

#: Tag names in Nova's PCI request spec (``nova.pci.request``).
PCI_NET_TAG = "physical_network"
PCI_TRUSTED_TAG = "trusted"
PCI_DEVICE_TYPE_TAG = "dev_type"
PCI_REMOTE_MANAGED_TAG = "remote_managed"

#: Network types whose traffic is tunnelled over the host's IP stack; a port on
#: one has no physical network (Nova's ``L3_NETWORK_TYPES``).
TUNNELLED_NETWORK_TYPES = frozenset({"vxlan", "gre", "geneve"})

#: Neutron's ``numa_affinity_policy`` values (Nova's PCINUMAAffinityPolicy).
NUMA_POLICIES = ("required", "legacy", "preferred", "socket")


@dataclass(frozen=True)
class NetworkPlacement:
    """Where a network's traffic leaves the host."""

    physical_network: str | None
    tunnelled: bool


@dataclass(frozen=True)
class PortPciRequest:
    """One device for one port."""

    port_id: str
    vnic_type: VnicType
    physical_network: str | None
    remote_managed: bool
    trusted: bool | None = None  # None: the port's binding profile does not say
    dev_type: str | None = None  # None: any VF (Nova sets it for type-PF and vdpa only)
    capabilities: tuple[str, ...] = ()  # network capabilities the device must have
    numa_policy: str | None = None  # the port's numa_affinity_policy
    count: int = 1

    @property
    def needs_switchdev(self) -> bool:
        return CAPABILITY_SWITCHDEV in self.capabilities

    def to_nova_spec(self) -> dict[str, str | None]:
        """The spec dict Nova puts in ``InstancePCIRequest.spec[0]`` for this port.

        Capabilities are left out: Nova has no field for them.
        """
        spec: dict[str, str | None] = {
            PCI_NET_TAG: self.physical_network,
            PCI_REMOTE_MANAGED_TAG: str(self.remote_managed),
        }
        if self.dev_type:
            spec[PCI_DEVICE_TYPE_TAG] = self.dev_type
        if self.trusted is not None:
            spec[PCI_TRUSTED_TAG] = str(self.trusted)
        return spec

    def describe(self) -> str:
        """Short human form, used in error messages: what was wanted."""
        parts = [f"physical_network {self.physical_network or '(none: tunnelled)'}"]
        if self.dev_type:
            parts.append(f"dev_type {self.dev_type}")
        if self.trusted is not None:
            parts.append(f"trusted {str(self.trusted).lower()}")
        if self.remote_managed:
            parts.append("remote_managed")
        parts.extend(self.capabilities)
        return ", ".join(parts)


def network_placement(network: Mapping[str, Any]) -> NetworkPlacement:
    """Physical network and tunnelling of a Neutron network dict.

    With segments (multi-provider networks), the first segment that names a
    physical network wins, as in Nova. A network whose segments name none is
    tunnelled here; Nova refuses such a network with an error instead.
    """
    segments = network.get("segments") or []
    if not isinstance(segments, list):
        raise InvalidValue("network.segments", segments, "expected a list of segment dicts")
    for segment in segments:
        if not isinstance(segment, Mapping):
            raise InvalidValue("network.segments", segments, "expected a list of segment dicts")
        physnet = segment.get("provider:physical_network")
        if physnet:
            return NetworkPlacement(str(physnet), False)
    if segments:
        tunnelled = any(
            s.get("provider:network_type") in TUNNELLED_NETWORK_TYPES for s in segments
        )
        return NetworkPlacement(None, tunnelled)
    physnet = network.get("provider:physical_network")
    return NetworkPlacement(
        str(physnet) if physnet else None,
        network.get("provider:network_type") in TUNNELLED_NETWORK_TYPES,
    )


def binding_profile(port: Mapping[str, Any]) -> Mapping[str, Any]:
    """``binding:profile``, which Neutron may send as absent, None or {}."""
    profile = port.get(BINDING_PROFILE) or {}
    if not isinstance(profile, Mapping):
        raise InvalidValue(BINDING_PROFILE, profile, "expected a JSON object")
    return profile


def trusted_from_profile(profile: Mapping[str, Any], port_id: str | None = None) -> bool | None:
    """``binding:profile['trusted']`` as a bool, None when absent.

    Nova reads it leniently (anything unrecognised is False). A typo in a
    security-relevant flag should not silently mean "untrusted" here, so an
    unrecognised value is an error.
    """
    value = profile.get("trusted")
    if value is None:
        return None
    try:
        return bool(strutils.bool_from_string(value, strict=True))
    except ValueError:
        field = f"{BINDING_PROFILE}.trusted"
        if port_id:
            field = f"port {port_id} {field}"
        raise InvalidValue(field, value, "expected true/false (or yes/no, 1/0)") from None


def pci_request_for_port(
    port: Mapping[str, Any], network: Mapping[str, Any] | None
) -> PortPciRequest | None:
    """The PCI request for one Neutron port, or None when it needs no device.

    ``network`` is the port's network as Neutron shows it (with ``segments``
    or ``provider:*`` fields); it may be None only for ports that need no device.
    """
    port_id = port.get("id")
    if not isinstance(port_id, str) or not port_id:
        raise InvalidValue("port.id", port_id, "expected the Neutron port id")
    vnic_type = vnic_type_of_port(port)
    if not needs_pci_device(vnic_type):
        return None
    if network is None:
        raise InvalidValue(
            f"port {port_id} network", None, "a port that needs a VF needs its network"
        )
    profile = binding_profile(port)
    placement = network_placement(network)
    numa_policy = port.get("numa_affinity_policy")
    if numa_policy is not None and numa_policy not in NUMA_POLICIES:
        raise InvalidValue(
            f"port {port_id} numa_affinity_policy", numa_policy, "expected one of "
            + ", ".join(NUMA_POLICIES)
        )
    return PortPciRequest(
        port_id=port_id,
        vnic_type=vnic_type,
        physical_network=placement.physical_network,
        remote_managed=vnic_type is VnicType.REMOTE_MANAGED,
        trusted=trusted_from_profile(profile, port_id),
        dev_type=PCI_DEVICE_TYPE_FOR_VNIC.get(vnic_type),
        capabilities=(CAPABILITY_SWITCHDEV,)
        if requires_switchdev(vnic_type, profile, port_id)
        else (),
        numa_policy=numa_policy,
    )


def pci_requests_for_ports(
    ports: Iterable[Mapping[str, Any]], networks: Mapping[str, Mapping[str, Any]]
) -> list[PortPciRequest]:
    """PCI requests for several ports, in port order; ``networks`` by network id."""
    requests = []
    for port in ports:
        net_id = port.get("network_id")
        network = networks.get(net_id) if isinstance(net_id, str) else None
        request = pci_request_for_port(port, network)
        if request is not None:
            requests.append(request)
    return requests


__all__ = [
    "NetworkPlacement",
    "PortPciRequest",
    "binding_profile",
    "network_placement",
    "pci_request_for_port",
    "pci_requests_for_ports",
    "trusted_from_profile",
]
