"""What ports left on the host, found without the state database.

The journal says what a plug changed; when it is lost (or a port was never
plugged here) the host itself is the record: an OVS Interface carries the
port's id in ``external_ids:iface-id``, a representor may carry the port's
name, and virtio-forwarder pairs a VF with the port's socket. These reads
feed :func:`~smartnic_vif.decisions.plug.plan_unplug_unrecorded` (what an
unplug without a journal removes), VF selection (a VF in use on the host is
never handed out) and ``status``/``doctor`` (host state no claim explains).

A representor is matched to its VF by discovery (``phys_switch_id`` and
``phys_port_name``, whatever its name). An inventory read before a plug
renamed a representor has its old name: a link that is a representor by
its own sysfs entry but unknown to the inventory makes discovery run again
(:func:`current_inventory`; sysfs, and the simulated host's tree, follow
renames).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from smartnic_vif.decisions.plug import PortTraces
from smartnic_vif.host import netdev
from smartnic_vif.host.discovery import is_vf_representor
from smartnic_vif.host.ovsdb import ATTACHED_MAC, IFACE_ID
from smartnic_vif.model.errors import HostOperationError, InvalidValue
from smartnic_vif.model.inventory import Inventory

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class HostUse:
    """One sign on the host that a VF is in use: its representor on OVS for
    a port (``port_id``, ``ovs_port``), or a relay of it (``relay_path``)."""

    vf_address: str
    port_id: str | None = None
    ovs_port: str | None = None
    relay_path: str | None = None

    def describe(self) -> str:
        if self.ovs_port is not None:
            return f"representor {self.ovs_port} is on OVS for port {self.port_id}"
        if self.relay_path is None:
            # The daemon's stats name a relay's socket once its VM connects.
            return "virtio-forwarder relays it (no VM connected)"
        return f"virtio-forwarder relays it to {self.relay_path}"


def _link_mac(name: str) -> str | None:
    try:
        link = netdev.get_link(name)
    except (InvalidValue, OSError):
        return None
    return str(link["mac"]).lower() if link else None


def vfs_of_links(inventory: Inventory, names: Iterable[str]) -> dict[str, str]:
    """Link name -> VF address, for the names that are VF representors in
    ``inventory`` (see :func:`current_inventory` for one that may be stale)."""
    by_name = {vf.representor.name: vf.address for vf in inventory.vfs() if vf.representor}
    return {n: by_name[n] for n in names if n in by_name}


def current_inventory(host: Any, names: Iterable[str]) -> Inventory:
    """The host's inventory, discovered again if one of the link ``names``
    is a VF representor it does not know by that name.

    A process keeps its discovery (a plug reads it, nova-compute plugs for
    days), and a plug renames the representor it puts on OVS: the kept
    inventory has the name from before. sysfs follows renames (the
    simulated host's tree too), so discovery read again knows it."""
    inventory: Inventory = host.inventory()
    known = {vf.representor.name for vf in inventory.vfs() if vf.representor}
    if any(n not in known and is_vf_representor(inventory.sysfs_root, n) for n in names):
        inventory = host.inventory(refresh=True)
    return inventory


def relays(host: Any) -> list[tuple[str, str | None]] | None:
    """(VF address, socket path) of every virtio-forwarder relay; None when
    the daemon is not there to ask (no relay can be known then)."""
    endpoint = str(host.config.forwarder_stats_endpoint)
    if endpoint.startswith("ipc://") and not os.path.exists(endpoint[len("ipc://"):]):
        return None
    try:
        in_use = host.forwarder.relays_in_use()
    except HostOperationError as e:
        LOG.warning("cannot list virtio-forwarder relays: %s", e)
        return None
    return [(str(r.pci), r.vhost_path) for r in in_use if r.pci is not None]


def host_uses(host: Any, ovs_ports: list[Any] | None = None) -> list[HostUse]:
    """Every VF the host shows in use: representors on OVS with an iface-id,
    and relays. ``ovs_ports``: the OVS ports with an iface-id, when the
    caller has just read them."""
    ports = host.ovsdb.ports_with_iface_id() if ovs_ports is None else ovs_ports
    names = [p.name for p in ports]
    vfs = vfs_of_links(current_inventory(host, names), names)
    uses = [HostUse(vfs[p.name], port_id=p.external_ids[IFACE_ID], ovs_port=p.name)
            for p in ports if p.name in vfs]
    uses += [HostUse(vf, relay_path=path) for vf, path in relays(host) or []]
    return uses


def _unclaimed_uses(host: Any, claims: Mapping[str, str],
                    ovs_ports: list[Any] | None = None) -> list[HostUse]:
    """The host's uses of VFs that no claim explains (``claims``: VF address
    -> port id): a representor on OVS for a port that does not hold its VF,
    a relay of a VF nobody claims."""
    uses = []
    for use in host_uses(host, ovs_ports):
        owner = claims.get(use.vf_address)
        if owner is None or (use.port_id is not None and use.port_id != owner):
            uses.append(use)
    return uses


def unexplained(host: Any, claims: Mapping[str, str],
                ovs_ports: list[Any] | None = None) -> list[dict[str, Any]]:
    """Host state no claim explains, for ``status`` and ``doctor``
    (``ovs_ports``: as for :func:`host_uses`)."""
    return [{"vf": use.vf_address, "port_id": use.port_id,
             "what": f"{use.describe()}, which no claim explains"}
            for use in _unclaimed_uses(host, claims, ovs_ports)]


def busy_vfs(host: Any, claims: Mapping[str, str]) -> dict[str, str]:
    """VF address -> why, for VFs in use on the host without a claim (for
    :func:`~smartnic_vif.decisions.selection.select_vf`)."""
    busy: dict[str, str] = {}
    for use in _unclaimed_uses(host, claims):
        busy.setdefault(use.vf_address, use.describe())
    return busy


def port_traces(
    host: Any, port_id: str, *, vf_address: str | None = None,
    representor_name: str | None = None, vhost_path: str | None = None,
    mac: str | None = None,
) -> PortTraces:
    """What ``port_id`` left on the host. The hints (from the port's VIF,
    when there is one) narrow the search; without them the port is found
    by its iface-id in OVS and the VF by the representor that carries it."""
    # Here, not at the top: vif_builder loads os-vif, which the reads of
    # status and doctor (unexplained) do without.
    from smartnic_vif.decisions.vif_builder import devname_for_port

    ovs = host.ovsdb.find_ports_by_iface_id(port_id)
    mac = mac or next((p.external_ids.get(ATTACHED_MAC) for p in ovs
                       if p.external_ids.get(ATTACHED_MAC)), None)
    names = [p.name for p in ovs]
    inventory = current_inventory(host, [*names, *([representor_name] if representor_name else [])])
    ovs_vfs = vfs_of_links(inventory, names)
    if vf_address is None and ovs_vfs:
        vf_address = sorted(set(ovs_vfs.values()))[0]
    relay_path = None
    if vhost_path is not None:
        try:
            paired = host.forwarder.query_pci(vhost_path)
        except HostOperationError as e:
            LOG.warning("cannot ask virtio-forwarder about %s: %s", vhost_path, e)
            paired = None
        if paired is not None and (vf_address is None or str(paired) == vf_address):
            vf_address, relay_path = str(paired), vhost_path
    if relay_path is None and vf_address is not None and vf_address in ovs_vfs.values():
        # The VF's representor is on OVS for this port: its relay is the port's too.
        relay_path = next((path for vf, path in relays(host) or [] if vf == vf_address), None)
    port_names = tuple(dict.fromkeys([representor_name or devname_for_port(port_id), *names]))
    if vf_address is None:
        return PortTraces(port_id, mac=mac, port_names=port_names, ovs_ports=tuple(names))
    vf = inventory.vf(vf_address)
    home = vf.representor.name if vf.representor else None
    if home is not None:
        # A rename this process made (the port's plug) remembers the name
        # before it, which the lost journal held too.
        before = host.name_before_renames(home)
        if before != home and not netdev.exists(before):
            home = before
    current = next((n for n, v in ovs_vfs.items() if v == vf_address), None)
    if current is None:
        candidates = [n for n in (representor_name, home) if n]
        current = next((n for n, v in vfs_of_links(inventory, candidates).items()
                        if v == vf_address and _link_mac(n) is not None), None)
    settings = host.vf_settings(vf_address)
    pf = inventory.pf(vf.pf_address)
    return PortTraces(
        port_id, vf_address=vf_address, mac=mac, port_names=port_names,
        ovs_ports=tuple(names), relay_path=relay_path, representor=current,
        representor_home=home, vf_mac=settings.get("mac"),
        vf_driver=host.vf_driver(vf_address), pf_driver=pf.driver,
    )
