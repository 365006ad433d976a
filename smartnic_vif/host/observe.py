"""Read what a plugged port's plan names, as it is on the host now.

The reads :func:`smartnic_vif.decisions.repair.plan_repair` compares with the
plan: the VF's settings and driver, the representor's links (under its planned
and its kernel name), the OVS port and bridge, and the virtio-forwarder relay
(``QUERY_PCI``). All are plain reads in the caller (no privilege). What cannot
be read is left out of the observation and named in its ``errors``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from smartnic_vif.decisions.plan import Plan
from smartnic_vif.decisions.plug import LinkState
from smartnic_vif.decisions.repair import ObservedPort, OvsPortState, link_names
from smartnic_vif.host import netdev
from smartnic_vif.model import types
from smartnic_vif.model.errors import HostOperationError, NotFound

if TYPE_CHECKING:
    from smartnic_vif.host.backend import Host
    from smartnic_vif.host.ovsdb import PortInfo

# What a failed read may raise: the host's own errors, OS errors and bad values.
_READ_ERRORS = (HostOperationError, NotFound, OSError, ValueError)


def observe_port(host: Host, plan: Plan,
                 known_ports: Mapping[str, PortInfo] | None = None) -> ObservedPort:
    """The host's state of everything ``plan``'s ``do`` steps set.
    ``known_ports``: OVS ports by name that the caller has just read (status
    reads them all in one pass); a port not in it is read here."""
    errors: list[str] = []
    settings: dict[str, Any] | None = None
    driver: str | None = None
    driver_known = False
    vf = plan.vf_address
    ops = {step.do.name for step in plan.steps}
    if vf is not None and "set_vf" in ops:
        try:
            settings = host.vf_settings(vf)
        except _READ_ERRORS as e:
            errors.append(f"cannot read VF {vf}: {e}")
    if vf is not None and "bind_driver" in ops:
        driver, driver_known = host.vf_driver(vf), True
    links: dict[str, LinkState | None] = {}
    for name in sorted(link_names(plan)):
        try:
            link = netdev.get_link(types.ifname(name))
        except _READ_ERRORS as e:
            errors.append(f"cannot read link {name}: {e}")
            continue
        links[name] = None if link is None else LinkState(
            name=name, mtu=int(link["mtu"]), up=bool(link["up"]), promisc=bool(link["promisc"]))
    ovs_ports: dict[str, OvsPortState | None] = {}
    bridges: dict[str, bool] = {}
    relays: dict[str, str | None] = {}
    for step in plan.steps:
        op, args = step.do, step.do.args
        try:
            if op.name == "ovs_set_port":
                known = (known_ports or {}).get(args["port"])
                info = known if known is not None else host.ovsdb.get_port(args["port"])
                ovs_ports[args["port"]] = None if info is None else OvsPortState(
                    bridge=info.bridge, external_ids=dict(info.external_ids),
                    mtu_request=info.mtu_request)
            elif op.name == "ensure_bridge":
                bridges[args["bridge"]] = host.ovsdb.bridge_exists(args["bridge"])
            elif op.name == "forwarder_add":
                paired = host.forwarder.query_pci(args["vhost_path"])
                relays[args["vhost_path"]] = None if paired is None else str(paired)
        except _READ_ERRORS as e:
            errors.append(f"cannot check step {step.title!r}: {e}")
    return ObservedPort(vf_settings=settings, vf_driver=driver, vf_driver_known=driver_known,
                        links=links, ovs_ports=ovs_ports, bridges=bridges, relays=relays,
                        errors=tuple(errors))
