"""Standalone port commands: attach, detach, pci-spec (status, reconcile and
doctor are in :mod:`smartnic_vif.cli.health`).

They do on one host, without Nova, what Nova and os-vif do together: select a
VF by capability, claim it durably, build the VIF, plug it through this
project's os-vif plugin and print the libvirt interface XML. The claim is a
row in the state store written before the host is touched; the plugin then
journals its plan and progress in the same row, so ``reconcile`` can finish
or undo whatever a crash interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from typing import Any

from oslo_config import cfg

from smartnic_vif import conf
from smartnic_vif.cli import render
from smartnic_vif.cli.main import EXIT_OK, UsageError, config_field, load_config
from smartnic_vif.model import types
from smartnic_vif.model.errors import InvalidValue, SmartNICError

VNIC_CHOICES = ("normal", "direct", "virtio-forwarder")
CLAIM_RETRIES = 16


def register(sub: Any) -> None:
    p = sub.add_parser("attach", help="select and claim a VF, plug the port, print libvirt XML")
    p.add_argument("--port-id", required=True, help="Neutron port id (UUID)")
    p.add_argument("--mac", required=True)
    p.add_argument("--vnic-type", required=True, choices=VNIC_CHOICES)
    p.add_argument("--instance-uuid", required=True)
    p.add_argument("--bridge", help="OVS bridge (default: integration_bridge)")
    p.add_argument("--physnet", help="physical network; omit for tunnelled networks")
    p.add_argument("--mtu", type=int)
    p.add_argument("--trusted", action="store_true", help="make the VF trusted")
    p.add_argument("--vhost-path", help="vhost-user socket (virtio-forwarder; default "
                   "<vhostuser_socket_dir>/vhu<port id> cut to 14 characters)")
    p.add_argument("--vif-name", help="tap name of a normal port (default tap<port id>)")
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_attach)

    p = sub.add_parser("detach", help="unplug a port and release its VF")
    p.add_argument("--port-id", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_detach)

    p = sub.add_parser("pci-spec", help="Nova [pci] device_spec and alias lines for this host")
    p.add_argument("--physnet-map", action="append", default=[], metavar="PF=PHYSNET",
                   help="PF (PCI address or netdev) to physical network; PF= for tunnels only")
    p.add_argument("--alias-name", default="smartnic-vf")
    p.add_argument("--per-vf", action="store_true",
                   help="one entry per VF (a slot of eight as dddd:bb:ss.*) instead of the "
                   "fewest entries")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_pci_spec)


# -- shared plumbing ------------------------------------------------------------
class ReadSession:
    """Config, the host backend and the state store: what a read command
    (``status``) needs. It starts no privileged helper and loads no os-vif:
    every read of the host needs no privilege."""

    def __init__(self, args: argparse.Namespace) -> None:
        from smartnic_vif.host.discovery import BackgroundDiscovery

        self.group = load_config(args)
        # Discovery runs beside the imports and the OVSDB connection below.
        discovery = BackgroundDiscovery(self.group.sysfs_root)
        from smartnic_vif.host.backend import Host
        from smartnic_vif.host.ovsdb import READ_TABLES
        from smartnic_vif.host.state import StateStore

        self.host = Host(self.group, inventory=discovery, ovsdb_tables=READ_TABLES)
        self.store = StateStore(self.group.state_path)


class Session(ReadSession):
    """Config, the plugin (with its host backend and state store), and os-vif."""

    def __init__(self, args: argparse.Namespace) -> None:
        # Not ReadSession's __init__: here the plugin makes the host and store.
        from smartnic_vif.host import privileged
        from smartnic_vif.osvif.plugin import SmartNICPlugin

        self.group = load_config(args)
        privileged.start()
        self.plugin = SmartNICPlugin(self.group)
        self.host = self.plugin.host
        self.store = self.plugin.store

    def device_specs(self) -> list[Any] | None:
        from smartnic_vif.decisions.devspec import parse_device_specs

        lines = list(self.group.pci_device_spec or [])
        return parse_device_specs(lines) if lines else None

    def os_vif(self) -> Any:
        import os_vif

        os_vif.initialize()
        return os_vif


def _uuid(value: str, field: str) -> str:
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError):
        raise InvalidValue(field, value, "expected a UUID") from None


def _port_dict(args: argparse.Namespace, group: Any, port_id: str, mac: str) -> dict[str, Any]:
    # Each value is named as the user gave it: the option, or the config
    # option and its file.
    if args.bridge is not None:
        bridge = types.ifname(args.bridge, "--bridge")
    else:
        bridge = types.ifname(group.integration_bridge, config_field("integration_bridge"))
    details: dict[str, Any] = {
        "bridge_name": bridge,
        "datapath_type": types.datapath_type(group.default_datapath_type,
                                             config_field("default_datapath_type")),
        "port_filter": False,
        "ovs_hybrid_plug": False,
    }
    if args.vnic_type == "virtio-forwarder":
        from smartnic_vif.host.forwarder.client import check_vhost_socket

        dirs = conf.vhost_socket_dirs(group)
        if args.vhost_path is not None:
            path = types.vhost_socket_path(args.vhost_path, "--vhost-path", dirs)
        else:
            path = types.vhost_socket_path(
                os.path.join(group.vhostuser_socket_dir, ("vhu" + port_id)[:14]),
                config_field("vhostuser_socket_dir"), dirs)
        check_vhost_socket(path, dirs, "--vhost-path")
        details.update(vhostuser_socket=path, vhostuser_mode="server", vhostuser_ovs_plug=True)
    elif args.vhost_path is not None:
        raise UsageError("--vhost-path is only for --vnic-type virtio-forwarder")
    profile: dict[str, Any] = {}
    if args.vnic_type == "direct":
        profile["capabilities"] = ["switchdev"]
    if args.trusted:
        profile["trusted"] = True
    return {
        "id": port_id,
        "mac_address": mac,
        "network_id": _network_id(args),
        "binding:vnic_type": args.vnic_type,
        "binding:vif_type": "ovs" if args.vnic_type == "normal" else "agilio_ovs",
        "binding:vif_details": details,
        "binding:profile": profile,
        "status": "ACTIVE",
    }


def _network_id(args: argparse.Namespace) -> str:
    # Standalone ports have no Neutron network: one stable id per physnet
    # (or for all tunnelled ports) keeps the VIFs Nova-shaped.
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"smartnic-vif:{args.physnet or 'tunnel'}"))


def _network(args: argparse.Namespace) -> dict[str, Any]:
    net: dict[str, Any] = {"id": _network_id(args)}
    if args.physnet:
        net.update({"provider:network_type": "vlan", "provider:physical_network": args.physnet})
    else:
        net["provider:network_type"] = "vxlan"
    if args.mtu is not None:
        net["mtu"] = types.mtu(args.mtu, "--mtu")
    return net


# -- attach / detach ---------------------------------------------------------------
def cmd_attach(args: argparse.Namespace) -> int:
    from smartnic_vif.decisions import libvirt_xml, selection, vif_builder
    from smartnic_vif.decisions.pci_request import pci_request_for_port
    from smartnic_vif.decisions.plug import port_from_vif
    from smartnic_vif.host import traces
    from smartnic_vif.host.state import VfAlreadyClaimed

    # Validate everything before touching anything.
    port_id = _uuid(args.port_id, "--port-id")
    instance_uuid = _uuid(args.instance_uuid, "--instance-uuid")
    mac = types.unicast_mac(args.mac, "--mac")
    if args.vif_name is not None:
        types.ifname(args.vif_name, "--vif-name")
    if args.physnet is not None:
        types.physnet(args.physnet, "--physnet")
    session = Session(args)
    port = _port_dict(args, session.group, port_id, mac)
    network = _network(args)
    request = pci_request_for_port(port, network)
    existing = session.store.get(port_id)
    if existing is not None and existing.phase == "plugged":
        if "vif" not in existing.request:
            raise SmartNICError(
                f"port {port_id} was plugged through os-vif (nova-compute), not by attach; "
                "manage it through Nova, or detach it first")
        vif = vif_from_record(existing)
        differences = _attach_differences(existing, vif, args, port, network, instance_uuid)
        if differences:
            raise SmartNICError(
                f"port {port_id} is already attached with other arguments: "
                f"{'; '.join(differences)}; detach it first to attach it differently")
        if args.dry_run:
            return _print_repairs(args, session, existing)
        # The same arguments: plugging again re-asserts every change (each
        # is idempotent), which repairs drift; with none, nothing changes.
        session.os_vif().plug(vif, vif_builder.instance_info(
            existing.request["instance_uuid"], f"instance-{existing.request['instance_uuid'][:8]}"))
        return _print_attached(args, existing.vf_address, vif, libvirt_xml, note="already attached")

    vf = None
    for _ in range(CLAIM_RETRIES):
        if request is not None:
            claims = session.store.claims()
            vf = selection.select_vf(
                session.host.inventory(), claims, request, session.device_specs(),
                busy=traces.busy_vfs(session.host, claims),
            )
        vif = vif_builder.build_vif(port, network=network, vf=vf, devname=args.vif_name)
        if args.dry_run:
            return _print_plan(args, session, vif, instance_uuid, vf)
        try:
            session.store.claim(
                port_id, vf.address if vf else None, str(port_from_vif(
                    vif, instance_uuid, session.plugin.options).mode),
                {"vif": vif.obj_to_primitive(), "instance_uuid": instance_uuid,
                 "physnet": args.physnet},
            )
            break
        except VfAlreadyClaimed:
            continue  # another process took it between selection and claim
    else:
        raise InvalidValue("--port-id", port_id, "no VF could be claimed after retries")

    osvif = session.os_vif()
    instance = vif_builder.instance_info(instance_uuid, f"instance-{instance_uuid[:8]}")
    try:
        osvif.plug(vif, instance)
    except Exception:
        # The plugin undid its own steps; the claim must not outlive them.
        record = session.store.get(port_id)
        if record is not None and record.phase == "claimed":
            session.store.release(port_id)
        raise
    if vf is None:
        session.store.set_phase(port_id, "plugged")
    return _print_attached(args, vf.address if vf else None, vif, libvirt_xml)


def _field(obj: Any, attr: str) -> Any:
    """A versioned object's field, None when it has no such field or it is unset."""
    if obj is None or attr not in obj.fields or not obj.obj_attr_is_set(attr):
        return None
    return getattr(obj, attr)


def _attach_arguments(vif: Any, instance_uuid: str, physnet: str | None) -> dict[str, Any]:
    """What ``attach``'s options made of ``vif``, by option."""
    profile = _field(vif, "port_profile")
    network = _field(vif, "network")
    return {
        "--mac": str(vif.address).lower(),
        "--instance-uuid": instance_uuid,
        "--bridge": _field(network, "bridge"),
        # The network id is made from the physnet (_network_id).
        "--physnet": (_field(network, "id"), physnet),
        "--mtu": _field(network, "mtu"),
        "--trusted": bool(_field(profile, "trusted")),
        "--vhost-path": _field(vif, "path"),
        "--vif-name": _field(vif, "vif_name") or _field(profile, "representor_name"),
    }


def _attach_differences(existing: Any, vif: Any, args: argparse.Namespace,
                        port: dict[str, Any], network: dict[str, Any],
                        instance_uuid: str) -> list[str]:
    """What ``args`` ask differently from the attached port ``existing``
    (whose VIF is ``vif``), one "OPTION NEW (attached: OLD)" per option."""
    from smartnic_vif.decisions import vif_builder
    from smartnic_vif.model.vnic import plug_mode_for

    if str(plug_mode_for(args.vnic_type)) != existing.mode:
        old_type = next(t for t in VNIC_CHOICES if str(plug_mode_for(t)) == existing.mode)
        return [f"--vnic-type {args.vnic_type} (attached: {old_type})"]
    if existing.vf_address is not None:
        # The VIF these arguments make on the VF the port holds.
        port = {**port, "binding:profile": {**port["binding:profile"],
                                            "pci_slot": existing.vf_address}}
    wanted = vif_builder.build_vif(port, network=network, devname=args.vif_name)
    # A claim made before "physnet" was recorded: show its network id.
    old_physnet = existing.request.get("physnet", f"network {vif.network.id}")
    old = _attach_arguments(vif, existing.request.get("instance_uuid", ""), old_physnet)
    new = _attach_arguments(wanted, instance_uuid, args.physnet)
    differences = []
    for option, value in new.items():
        if option == "--physnet":
            # Compared by network id; shown by name where the claim has it.
            if value[0] == old[option][0]:
                continue
            value, was = value[1], old[option][1]
        elif value == old[option]:
            continue
        else:
            was = old[option]
        differences.append(f"{option} {_shown(value)} (attached: {_shown(was)})")
    return differences


def _shown(value: Any) -> str:
    return "not given" if value is None or value is False else (
        "given" if value is True else str(value))


def _print_plan(args: argparse.Namespace, session: Session, vif: Any, instance_uuid: str,
                vf: Any) -> int:
    from smartnic_vif.decisions.plug import port_from_vif

    port = port_from_vif(vif, instance_uuid, session.plugin.options)
    if vf is None:
        text = (f"plug port {port.port_id} (normal mode): os-vif's ovs plugin adds "
                f"{vif.vif_name} to {port.bridge} with the port's external_ids")
        data: dict[str, Any] = {"action": "plug", "mode": "normal", "port_id": port.port_id,
                                "steps": []}
    else:
        plan = session.plugin.plan_port(port)
        text, data = plan.describe(), plan.to_dict()
    if args.json:
        render.emit_json({"dry_run": True, "plan": data})
    else:
        print(text)
    return EXIT_OK


def _print_repairs(args: argparse.Namespace, session: Session, record: Any) -> int:
    """--dry-run of an attached port with the same arguments: what attaching
    it again would repair (nothing, when the host matches its plan), as
    reconcile would repair it."""
    from smartnic_vif.cli.health import normal_port_repairs
    from smartnic_vif.decisions.repair import plan_repair
    from smartnic_vif.host.observe import observe_port

    if record.plan is None:  # a normal port: os-vif's ovs plugin plugs it again
        repairs = normal_port_repairs(session, record)
    else:
        repairs = [r.describe() for r in plan_repair(record.plan,
                                                     observe_port(session.host, record.plan))
                   if r.problem]
    if args.json:
        render.emit_json({"dry_run": True, "port_id": record.port_id, "vf": record.vf_address,
                          "status": "already attached", "repairs": repairs})
    else:
        print(f"port {record.port_id} is already attached"
              + (f" on VF {record.vf_address}" if record.vf_address else "")
              + (": attaching it again would repair:" if repairs
                 else ": attaching it again would change nothing"))
        for repair in repairs:
            print(f"  - {repair}")
    return EXIT_OK


def vif_from_record(record: Any) -> Any:
    from os_vif import objects
    from os_vif.objects import base

    objects.register_all()
    import smartnic_vif.osvif.objects  # noqa: F401 - registers our profiles

    return base.VersionedObject.obj_from_primitive(record.request["vif"])


def _print_attached(args: argparse.Namespace, vf_address: str | None, vif: Any,
                    libvirt_xml: Any, note: str = "attached") -> int:
    xml = libvirt_xml.interface_for_vif(vif)
    if args.json:
        render.emit_json({"port_id": vif.id, "vf": vf_address, "status": note,
                          "libvirt_xml": xml, "vif": vif.obj_to_primitive()})
    else:
        print(f"port {vif.id} {note}" + (f" on VF {vf_address}" if vf_address else ""))
        print(xml)
    return EXIT_OK


def cmd_detach(args: argparse.Namespace) -> int:
    from smartnic_vif.decisions import vif_builder

    port_id = _uuid(args.port_id, "--port-id")
    session = Session(args)
    record = session.store.get(port_id)
    if record is None:
        # No claim (the state database was lost, or the port is gone):
        # the host itself says what the port left.
        found = _detach_unrecorded(session, port_id)
        result: dict[str, Any] = {"port_id": port_id, "status": "not attached"}
        if found is not None:
            result = {"port_id": port_id, "status": "detached", "vf": found.vf_address,
                      "note": "no claim was recorded: removed what the port left on the host"}
    elif "vif" not in record.request:
        # Plugged through os-vif (Nova): its claim holds the plugin's request.
        from smartnic_vif.decisions.plug import PortRequest

        session.plugin.unplug_port(PortRequest(**record.request))
        if session.store.get(port_id) is not None:
            session.store.release(port_id)
        result = {"port_id": port_id, "status": "detached", "vf": record.vf_address}
    else:
        vif = vif_from_record(record)
        instance = vif_builder.instance_info(
            record.request["instance_uuid"], f"instance-{record.request['instance_uuid'][:8]}")
        session.os_vif().unplug(vif, instance)
        if session.store.get(port_id) is not None:
            session.store.release(port_id)
        result = {"port_id": port_id, "status": "detached", "vf": record.vf_address}
    if result["status"] == "detached":
        # What the unplug found gone and could not put back (status shows it
        # too, until reconcile acknowledges it): detached, with a warning.
        unrestored = [n["what"] for n in session.store.unrestored() if n["port_id"] == port_id]
        if unrestored:
            result["unrestored"] = unrestored
        for what in unrestored:
            print(f"smartnic-vif detach: warning: could not be restored: {what}",
                  file=sys.stderr)
    if args.json:
        render.emit_json(result)
    else:
        print(f"port {port_id}: {result['status']}"
              + (f" ({result['note']})" if result.get("note") else ""))
    return EXIT_OK


def _detach_unrecorded(session: Session, port_id: str) -> Any:
    """Remove what ``port_id`` left on the host without a claim: its OVS
    port (found by iface-id), the VF behind that representor (its MAC, the
    relay driver, the representor's name) and its relay (by the VF, or by
    the default socket path). None when the host shows nothing of it."""
    from smartnic_vif.host import traces
    from smartnic_vif.model.errors import SmartNICError

    vhost = os.path.join(session.group.vhostuser_socket_dir, ("vhu" + port_id)[:14])
    found = traces.port_traces(session.host, port_id, vhost_path=vhost)
    if found.vf_address is None:
        if not found.ovs_ports:
            return None
        return session.plugin.unplug_unrecorded(port_id, mac=found.mac)
    with session.host.vf_lock(found.vf_address):
        owner = session.store.by_vf(found.vf_address)
        if owner is not None:
            raise SmartNICError(f"port {port_id} has no claim but its traces are on VF "
                                f"{found.vf_address}, which port {owner.port_id} holds; "
                                f"detach port {owner.port_id} first")
        return session.plugin.unplug_unrecorded(
            port_id, vf_address=found.vf_address, vhost_path=found.relay_path or vhost,
            mac=found.mac)


# -- pci-spec ------------------------------------------------------------------------------
def cmd_pci_spec(args: argparse.Namespace) -> int:
    from smartnic_vif.decisions.devspec import (
        device_spec_lines,
        generate_alias,
        generate_device_specs,
    )
    from smartnic_vif.host.discovery import discover
    from smartnic_vif.host.pcibus import pci_addresses

    group = load_config(args)
    physnets: dict[str, str | None] = {}
    for item in args.physnet_map:
        pf, sep, physnet = item.partition("=")
        if not sep or not pf:
            raise UsageError(f"--physnet-map {item!r}: expected PF=PHYSNET")
        physnets[pf] = types.physnet(physnet, "--physnet-map") if physnet else None
    inventory = discover(group.sysfs_root)
    if not physnets:
        physnets = {pf.address: None for pf in inventory.pfs if pf.switchdev}
    # Every device on the host, so that no entry takes one that is no wanted VF.
    specs = generate_device_specs(inventory, physnets, per_vf=args.per_vf,
                                  host_addresses=pci_addresses(group.sysfs_root))
    aliases = generate_alias(inventory, args.alias_name)
    if args.json:
        render.emit_json({"device_spec": specs, "alias": aliases})
        return EXIT_OK
    print("[pci]")
    for line in device_spec_lines(specs):
        print(f"device_spec = {line}")
    for alias in aliases:
        import json

        print(f"alias = {json.dumps(alias, sort_keys=True)}")
    return EXIT_OK


__all__ = ["register", "Session", "cfg"]
