"""Choosing the VF for a port.

:func:`select_vf` takes the host inventory, the VFs already claimed, the port's
:class:`PortPciRequest` and optionally Nova's device_spec entries, and returns
the lowest-addressed free VF that satisfies every constraint. When none does,
:class:`NoSuitableVF` says, per device, the first constraint that excluded it.

The physical network, trusted and remote_managed tags of a VF come from the
first device_spec entry that matches it, as in Nova's PCI tracker. Whether a VF
can be accelerated (switchdev eswitch, representor present) comes from the
inventory, so nobody writes vendor or product ids to get an accelerated port.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from smartnic_vif.decisions.devspec import DeviceSpec, first_match
from smartnic_vif.decisions.pci_request import PortPciRequest
from smartnic_vif.model.errors import InvalidValue, NoSuitableVF
from smartnic_vif.model.inventory import Inventory, VirtualFunction
from smartnic_vif.model.types import PciAddress, pci_address

# Reasons, as they appear in NoSuitableVF.reasons. Constants so callers and
# tests can compare without parsing prose.
NOT_IN_DEVICE_SPEC = "not in [pci] device_spec"
REMOTE_MANAGED_MISMATCH = "remote_managed does not match"
NO_SWITCHDEV = "no switchdev"
NO_REPRESENTOR = "no representor"
CLAIMED = "claimed"
#: Prefix of the reason for a VF the host shows in use without a claim.
IN_USE = "in use on the host"

#: Policies under which a VF on another NUMA node is unusable. "preferred" only
#: orders candidates; "socket" is treated like "preferred" because the inventory
#: knows NUMA nodes, not sockets.
_STRICT_NUMA_POLICIES = (None, "legacy", "required")


@dataclass(frozen=True)
class Assessment:
    """One VF judged against one request: ``reason`` is None when it fits."""

    vf: VirtualFunction
    reason: str | None
    spec: DeviceSpec | None = None  # the device_spec entry that gave its tags


def _same_physnet(have: str | None, want: str | None) -> bool:
    # Nova compares tags case-insensitively; a request without a physnet
    # (tunnelled network) only takes VFs whose spec has no physnet tag.
    return (have or "").lower() == (want or "").lower()


def _sorted_vfs(inventory: Inventory) -> list[VirtualFunction]:
    return sorted(inventory.vfs(), key=lambda vf: PciAddress.parse(vf.address))


def assess_vf(
    vf: VirtualFunction,
    request: PortPciRequest,
    claimed_by: str | None,
    device_specs: Iterable[DeviceSpec] | None = None,
    numa_node: int | None = None,
    *,
    drivers: Collection[str | None] | None = None,
    inventory: Inventory | None = None,
    in_use: str | None = None,
) -> Assessment:
    """Judge one VF; constraints are checked from the most permanent (configured
    physnet, hardware capability) to the most passing (claimed), so the reason
    reported is the one worth acting on."""
    spec = None
    if device_specs is not None:
        spec = first_match(device_specs, vf, inventory)
        if spec is None:
            return Assessment(vf, NOT_IN_DEVICE_SPEC)
        if not _same_physnet(spec.physical_network, request.physical_network):
            have = spec.physical_network or "none"
            return Assessment(vf, f"physical_network {have}", spec)
        if request.trusted is not None and spec.trusted is not request.trusted:
            have = "unset" if spec.trusted is None else str(spec.trusted).lower()
            return Assessment(vf, f"trusted {have}", spec)
        if spec.remote_managed != request.remote_managed:
            return Assessment(vf, REMOTE_MANAGED_MISMATCH, spec)
    if request.needs_switchdev:
        if not vf.switchdev:
            return Assessment(vf, NO_SWITCHDEV, spec)
        if vf.representor is None:
            return Assessment(vf, NO_REPRESENTOR, spec)
    if drivers is not None and vf.driver not in drivers:
        return Assessment(vf, f"driver {vf.driver or 'none'}", spec)
    if numa_node is not None and request.numa_policy in _STRICT_NUMA_POLICIES:
        if vf.numa_node is None:
            # Nova's legacy policy takes devices without NUMA information.
            if request.numa_policy == "required":
                return Assessment(vf, "NUMA node unknown", spec)
        elif vf.numa_node != numa_node:
            return Assessment(vf, f"NUMA node {vf.numa_node}", spec)
    if claimed_by is not None:
        return Assessment(vf, CLAIMED, spec)
    if in_use is not None:
        return Assessment(vf, f"{IN_USE}: {in_use}", spec)
    return Assessment(vf, None, spec)


def assess_vfs(
    inventory: Inventory,
    claims: Mapping[str, str],
    request: PortPciRequest,
    device_specs: Iterable[DeviceSpec] | None = None,
    numa_node: int | None = None,
    *,
    drivers: Collection[str | None] | None = None,
    busy: Mapping[str, str] | None = None,
) -> list[Assessment]:
    """Every VF of the host, lowest address first, judged against ``request``.

    A VF claimed by the requesting port itself counts as free, so selecting
    again for the same port (a retried plug) gives the same VF. ``busy``
    maps VFs the host shows in use without a claim to why (see
    :func:`select_vf`).
    """
    _check_request(request)
    specs = list(device_specs) if device_specs is not None else None
    claimed = {pci_address(addr, "claims"): port for addr, port in claims.items()}
    in_use = {pci_address(addr, "busy"): why for addr, why in (busy or {}).items()}
    out = []
    for vf in _sorted_vfs(inventory):
        owner = claimed.get(vf.address)
        if owner == request.port_id:
            owner = None
        out.append(
            assess_vf(
                vf, request, owner, specs, numa_node, drivers=drivers, inventory=inventory,
                in_use=in_use.get(vf.address),
            )
        )
    return out


def _check_request(request: PortPciRequest) -> None:
    if request.dev_type not in (None, "type-VF"):
        raise InvalidValue(
            f"port {request.port_id} dev_type",
            request.dev_type,
            f"a {request.vnic_type.value} port takes a {request.dev_type} device, not a VF",
        )


def select_vf(
    inventory: Inventory,
    claims: Mapping[str, str],
    request: PortPciRequest,
    device_specs: Iterable[DeviceSpec] | None = None,
    numa_node: int | None = None,
    *,
    drivers: Collection[str | None] | None = None,
    busy: Mapping[str, str] | None = None,
) -> VirtualFunction:
    """The free VF for ``request``: lowest PCI address among those that fit.

    ``claims`` maps VF PCI addresses to the port ids holding them.
    ``device_specs`` (Nova's, parsed) decide which VFs are usable and their
    physnet/trusted tags; None skips those checks. ``numa_node`` asks for NUMA
    affinity according to the request's ``numa_policy`` (default legacy:
    devices on other nodes are out, devices without NUMA information are in;
    preferred: same-node devices first). ``drivers``, when given, lists the
    acceptable current drivers (None for no driver bound). ``busy`` maps
    VF addresses the host shows in use although no claim holds them (the
    representor on OVS for a port, a virtio-forwarder relay: what a lost
    state database leaves) to why; the host layer computes it
    (:func:`smartnic_vif.host.traces.busy_vfs`), and such a VF is never
    handed out.
    """
    assessed = assess_vfs(
        inventory, claims, request, device_specs, numa_node, drivers=drivers, busy=busy
    )
    fitting = [a.vf for a in assessed if a.reason is None]
    if fitting:
        if numa_node is not None and request.numa_policy in ("preferred", "socket"):
            # Stable sort keeps address order within each group.
            fitting.sort(key=lambda vf: vf.numa_node != numa_node)
        return fitting[0]
    wanted = request.describe()
    if numa_node is not None:
        wanted += f", NUMA node {numa_node} ({request.numa_policy or 'legacy'})"
    raise NoSuitableVF(
        request.port_id, wanted, {a.vf.address: a.reason or "" for a in assessed}
    )


__all__ = [
    "CLAIMED",
    "IN_USE",
    "NOT_IN_DEVICE_SPEC",
    "NO_REPRESENTOR",
    "NO_SWITCHDEV",
    "REMOTE_MANAGED_MISMATCH",
    "Assessment",
    "assess_vf",
    "assess_vfs",
    "select_vf",
]
