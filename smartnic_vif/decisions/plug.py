"""Plug and unplug plans for one VIF.

``port_from_vif`` reads what matters out of an os-vif VIF (ours or what
upstream Nova emits); ``plan_plug`` turns it, the host inventory and a snapshot
of the VF's current state into a :class:`~smartnic_vif.decisions.plan.Plan`
whose undo steps restore exactly that snapshot. Nothing here touches the host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from smartnic_vif.decisions.plan import Operation, Plan, Step
from smartnic_vif.model import types
from smartnic_vif.model.errors import InvalidValue
from smartnic_vif.model.inventory import Inventory

NORMAL, PASSTHROUGH, FORWARDER = "normal", "passthrough", "forwarder"
ZERO_MAC = "00:00:00:00:00:00"


@dataclass(frozen=True)
class PortRequest:
    """What one VIF asks of the host, validated."""

    port_id: str
    mode: str
    mac: str
    bridge: str
    mtu: int
    instance_uuid: str
    vf_address: str | None = None
    representor_name: str | None = None  # wished name, None: keep the current one
    trusted: bool = False
    spoofchk: bool = True
    vhost_path: str | None = None
    relay_driver: str | None = None
    datapath_type: str | None = None  # for a bridge that does not exist yet


@dataclass(frozen=True)
class LinkState:
    name: str
    mtu: int
    up: bool
    promisc: bool = False


@dataclass(frozen=True)
class VfSnapshot:
    """The VF's state before plug: everything unplug must put back."""

    settings: dict[str, Any]
    driver: str | None
    representor: LinkState


@dataclass(frozen=True)
class PlugOptions:
    default_mtu: int = 1500
    default_datapath_type: str = "system"
    vfio_driver: str = "vfio-pci"
    hook: bool = False
    default_bridge: str = "br-int"
    # Where a vhost-user socket may be; empty: anywhere (the check is off).
    vhost_socket_dirs: tuple[str, ...] = ()


def _get(obj: Any, attr: str, default: Any = None) -> Any:
    """A versioned object's field, or ``default`` when unset (os-vif objects
    raise on reading an unset field that has no default)."""
    if obj is None or attr not in getattr(obj, "fields", {}) or not obj.obj_attr_is_set(attr):
        return default
    return getattr(obj, attr)


def _set(obj: Any, attr: str) -> bool:
    return _get(obj, attr) is not None


def _profile_representor(profile: Any) -> tuple[str | None, str | None]:
    """(name, VF address) from any representor-carrying profile, looking at
    the profile itself and at its datapath_offload (what upstream Nova fills)."""
    offload = _get(profile, "datapath_offload")
    name = _get(profile, "representor_name") or _get(offload, "representor_name")
    address = _get(profile, "representor_address") or _get(offload, "representor_address")
    return name, address


def port_from_vif(vif: Any, instance_uuid: str, opts: PlugOptions) -> PortRequest:
    """Read a VIF (ours or upstream Nova's representor VIFs) into a request."""
    # Imported here, not at the top: the rest of this module (plans, link
    # and VF states) is read by status and doctor, which load no os-vif.
    from os_vif.objects import vif as osv_vif

    profile = _get(vif, "port_profile")
    if isinstance(vif, osv_vif.VIFHostDevice):
        mode = PASSTHROUGH
    elif isinstance(vif, osv_vif.VIFVHostUser):
        mode = FORWARDER
    elif isinstance(vif, (osv_vif.VIFOpenVSwitch, osv_vif.VIFBridge)):
        mode = NORMAL
    else:
        raise InvalidValue("vif", type(vif).__name__, "not a VIF type this plugin plugs")
    if not _set(vif, "address"):
        raise InvalidValue("vif.address", None, "a port MAC address is required")
    network = _get(vif, "network")
    bridge = _get(network, "bridge")
    mtu = _get(network, "mtu") or opts.default_mtu
    port_id = _get(profile, "interface_id")
    if mode == NORMAL:
        return PortRequest(
            port_id=str(port_id or vif.id),
            mode=mode,
            mac=types.unicast_mac(str(vif.address), "vif.address"),
            bridge=types.ifname(bridge or opts.default_bridge, "vif.network.bridge"),
            mtu=types.mtu(mtu, "vif.network.mtu"),
            instance_uuid=instance_uuid,
        )
    if port_id is None:
        raise InvalidValue("vif.port_profile.interface_id", None, "the Neutron port id is required")
    rep_name, vf_address = _profile_representor(profile)
    if mode == PASSTHROUGH and vf_address is None and _set(vif, "dev_address"):
        vf_address = vif.dev_address
    if vf_address is None:
        raise InvalidValue(
            "vif.port_profile.representor_address", None, "the VF's PCI address is required"
        )
    vhost_path = None
    if mode == FORWARDER:
        vhost_path = types.vhost_socket_path(_get(vif, "path"), "vif.path",
                                             opts.vhost_socket_dirs)
    # Upstream profiles carry no trust/spoofchk: the VF keeps Neutron's defaults.
    trusted = bool(_get(profile, "trusted", False))
    spoofchk = bool(_get(profile, "spoofchk", True))
    relay_driver = _get(profile, "relay_driver")
    datapath_type = _get(profile, "datapath_type")
    if datapath_type is not None:
        # "" (what OVS stores for its default) is no wish: default_datapath_type.
        datapath_type = types.datapath_type(
            datapath_type, "vif.port_profile.datapath_type") or None
    return PortRequest(
        port_id=str(port_id),
        mode=mode,
        mac=types.unicast_mac(str(vif.address), "vif.address"),
        bridge=types.ifname(bridge or opts.default_bridge, "vif.network.bridge"),
        mtu=types.mtu(mtu, "vif.network.mtu"),
        instance_uuid=instance_uuid,
        vf_address=types.pci_address(vf_address, "vif.port_profile.representor_address"),
        representor_name=types.ifname(rep_name, "representor_name") if rep_name else None,
        trusted=trusted,
        spoofchk=spoofchk,
        vhost_path=vhost_path,
        relay_driver=types.driver_name(relay_driver, "relay_driver") if relay_driver else None,
        datapath_type=datapath_type,
    )


def _hook(phase: str, port: PortRequest, rep: str) -> Step:
    return Step(
        f"run vendor hook ({phase})",
        Operation(
            "run_hook",
            {
                "phase": phase,
                "mode": port.mode,
                "vf_address": port.vf_address or "-",
                "representor": rep,
                "mac": port.mac,
                "vhost_path": port.vhost_path or "-",
            },
        ),
    )


def plan_plug(
    port: PortRequest,
    inventory: Inventory,
    snapshot: VfSnapshot,
    opts: PlugOptions,
) -> Plan:
    """The phases, lanes and steps that plug a passthrough or forwarder
    port, each step with its undo."""
    if port.mode == NORMAL or port.vf_address is None:
        raise InvalidValue("mode", port.mode, "plan_plug handles passthrough and forwarder ports")
    vf = inventory.vf(port.vf_address)
    inventory.representor_of(vf.address)  # fails clearly when there is none
    rep = snapshot.representor
    name = port.representor_name or rep.name
    # The phases, in the order they touch the host:
    #   1. [pre-plug hook,] rename the representor (OVS opens the port by
    #      name, so this comes first; without a rename it changes nothing);
    #   2. two lanes at the same time:
    #      - the representor's MTU, up and promiscuous flags, [the VF's
    #        driver,] the VF's settings (one privileged round trip) [, then
    #        ADD_SOCK, which opens the VF and reads them];
    #      - the OVS transaction (port, external_ids, MTU; the bridge if
    #        missing);
    #   3. check the representor is up [, post-plug hook].
    #
    # Why the flags go beside the OVS port: every change to a link costs
    # ovs-vswitchd a reconfiguration of all its bridges, and an OVS write
    # returns only once ovs-vswitchd has applied it; a representor brought
    # up before its OVS port was added kept ovs-vswitchd busy just when the
    # port came, and its privileged round trip came first too.
    #
    # Promiscuous, as OVS makes every port it adds: finding the flag set,
    # ovs-vswitchd writes no flags of its own, which saves a second link
    # change. Where it opened the device first, it writes the flags it
    # cached then plus promiscuous; if ours came in between, that write
    # takes the link down again (1 to 6 plugs in 100 here). It writes them
    # only while it applies the port, so phase 3, after the OVS port is
    # applied, checks that the representor is up and brings it up again if
    # not. (The kernel datapath writes no flags: no such race.)
    #
    # Undo runs last first in step order (phase by phase, lane by lane):
    # the port leaves OVS, the relay goes, then one privileged call gives
    # the VF back its settings and driver and the representor its name,
    # MTU and flags (the rename step's undo), so nothing changes the
    # representor while OVS still has it. Hence the OVS lane comes second.
    first: list[Step] = [_hook("pre-plug", port, name)] if opts.hook else []
    wanted = {
        "mac": port.mac,
        "vlan": 0,  # OVS tags on the representor; the VF itself stays untagged
        "qos": 0,
        "trust": port.trusted,
        "spoofchk": port.spoofchk,
    }
    original = {k: snapshot.settings[k] for k in wanted if k in snapshot.settings}
    renamed = name != rep.name
    first.append(
        Step(
            (f"rename representor {rep.name} to {name}" if renamed
             else f"note representor {rep.name} as it is") + " (unplug restores its name, "
            f"MTU {rep.mtu}, {'up' if rep.up else 'down'}"
            f"{', promiscuous' if rep.promisc else ''})",
            # Changes nothing unless renamed; its undo restores everything
            # the later steps change on the representor.
            Operation("configure_link", {"ifname": rep.name, "new_name": name}),
            Operation("configure_link", {"ifname": name, "new_name": rep.name,
                                         "mtu": rep.mtu, "up": rep.up, "promisc": rep.promisc}),
        )
    )
    vf_lane = [
        Step(
            f"set representor {name} MTU {port.mtu}, up and promiscuous",
            # No undo of its own: the rename step's restores all of it.
            Operation("configure_link", {"ifname": name, "mtu": port.mtu, "up": True,
                                         "promisc": True}),
        )
    ]
    if port.mode == FORWARDER:
        # The driver first, then the VF's settings, as libvirt does for a
        # hostdev: the PF sets them whichever driver holds the VF, and the
        # VF's user (here virtio-forwarder, on ADD_SOCK) reads them when it
        # opens the VF. Undone in reverse, the VF's own driver comes back
        # last and finds its original settings.
        driver = port.relay_driver or opts.vfio_driver
        vf_lane.append(
            Step(
                f"bind VF {vf.address} to {driver}",
                Operation("bind_driver", {"address": vf.address, "driver": driver}),
                Operation("bind_driver", {"address": vf.address, "driver": snapshot.driver}),
            )
        )
    vf_lane.append(
        Step(
            f"set VF {vf.index} of PF {vf.pf_address} MAC {port.mac}, VLAN 0, "
            f"trust {'on' if port.trusted else 'off'}, spoofchk {'on' if port.spoofchk else 'off'}",
            Operation("set_vf", {"pf_address": vf.pf_address, "vf_index": vf.index,
                                 "settings": wanted}),
            Operation("set_vf", {"pf_address": vf.pf_address, "vf_index": vf.index,
                                 "settings": original}),
        )
    )
    if port.mode == FORWARDER:
        vf_lane.append(
            Step(
                f"relay VF {vf.address} to {port.vhost_path} (virtio-forwarder ADD_SOCK)",
                Operation("forwarder_add", {"vf_address": vf.address,
                                            "vhost_path": port.vhost_path}),
                Operation("forwarder_remove", {"vf_address": vf.address,
                                               "vhost_path": port.vhost_path}),
            )
        )
    datapath_type = port.datapath_type or opts.default_datapath_type
    ovs_lane = [
        Step(
            f"add {name} to {port.bridge} as port {port.port_id}, MTU {port.mtu} "
            f"(making {port.bridge}, datapath {datapath_type}, if missing)",
            # One OVSDB transaction: the bridge (only if it is missing; an
            # existing one keeps its datapath) and the port with its
            # external_ids and MTU. The bridge is not undone: others use it.
            Operation(
                "ovs_set_port",
                {
                    "bridge": port.bridge,
                    "port": name,
                    "iface_id": port.port_id,
                    "mac": port.mac,
                    "vm_uuid": port.instance_uuid,
                    "mtu": port.mtu,
                    "datapath_type": datapath_type,
                },
            ),
            Operation("ovs_delete_port", {"port": name}),
        )
    ]
    last = [Step(f"check representor {name} is up",
                 Operation("confirm_link_up", {"ifname": name}))]
    if opts.hook:
        last.append(_hook("post-plug", port, name))
    return Plan.phased("plug", port.port_id, port.mode,
                       [[first], [vf_lane, ovs_lane], [last]], vf_address=vf.address)


def post_unplug_hook(plug_plan: Plan) -> Operation | None:
    """The vendor hook call that follows an unplug of ``plug_plan`` (unplug
    itself is the plan's undo steps, last first), or None if plug ran none."""
    hook = next((s for s in plug_plan.steps if s.do.name == "run_hook"), None)
    if hook is None:
        return None
    return Operation("run_hook", dict(hook.do.args, phase="post-unplug"))


@dataclass(frozen=True)
class PortTraces:
    """What a port may have left on the host, as the host layer found it
    without a journal (the state was lost, or the port was never plugged
    here): the input of :func:`plan_unplug_unrecorded`."""

    port_id: str
    vf_address: str | None = None  # the VF the traces point at
    mac: str | None = None  # the port's MAC (the VIF's, or OVS's attached-mac)
    port_names: tuple[str, ...] = ()  # names the port gives its representor
    ovs_ports: tuple[str, ...] = ()  # OVS ports whose Interface has iface-id = port_id
    relay_path: str | None = None  # a virtio-forwarder relay of the VF to the port's socket
    representor: str | None = None  # the VF's representor's current name (None: none found)
    representor_home: str | None = None  # its name as discovery knows it
    vf_mac: str | None = None  # the VF's MAC now
    vf_driver: str | None = None
    pf_driver: str | None = None


def plan_unplug_unrecorded(
    traces: PortTraces, inventory: Inventory, opts: PlugOptions,
    mode: str | None = None, relay_driver: str | None = None,
) -> Plan:
    """Unplug a port this host has no record of: remove what ``traces``
    show the port left, and restore only what can be known without the
    plug's snapshot. Each change needs evidence that it is the port's:

    - the relay that pairs the VF with the port's socket, and the OVS ports
      whose iface-id is the port's, are removed;
    - the VF is the port's to reset only while the port is still on it:
      the VF is relayed to the port's socket, or its representor carries
      one of the port's names (its OVS port's, or the name the port wished).
      A VF that an unplug with a journal restored shows none of that, so a
      second unplug (Nova's live migration of a direct port unplugs twice
      on the source) changes nothing, even where the VF had the port's MAC
      before the plug;
    - then the VF's MAC is cleared only while it is the port's MAC (a VF
      handed on since, or never this port's, keeps its MAC);
    - a VF on the relay driver goes back to its PF's driver only for a
      forwarder port whose relay, or MAC, is on it (a passthrough VF's
      driver is libvirt's business);
    - a representor that carries the port's name gets back the name
      discovery knows, when that differs (on a real host sysfs follows
      the rename, so a representor renamed in another process keeps the
      port's name; see the caller's note).

    VLAN, trust, spoof checking, MTU and link flags from before the plug
    are unknown and left as they are."""
    steps: list[Step] = []
    vf = inventory.vf(traces.vf_address) if traces.vf_address else None
    if vf is not None and traces.relay_path:
        steps.append(Step(
            f"remove virtio-forwarder relay of VF {vf.address} to {traces.relay_path}",
            Operation("forwarder_remove", {"vf_address": vf.address,
                                           "vhost_path": traces.relay_path}),
        ))
    for name in traces.ovs_ports:
        steps.append(Step(f"remove OVS port {name} (iface-id {traces.port_id})",
                          Operation("ovs_delete_port", {"port": name})))
    if vf is not None:
        rep, home = traces.representor, traces.representor_home
        port_on_vf = traces.relay_path is not None or rep in traces.port_names
        mac_is_ports = (port_on_vf and traces.mac is not None
                        and traces.vf_mac == traces.mac)
        if mac_is_ports:
            steps.append(Step(
                f"clear VF {vf.index} of PF {vf.pf_address} MAC (it is the port's, {traces.mac})",
                Operation("set_vf", {"pf_address": vf.pf_address, "vf_index": vf.index,
                                     "settings": {"mac": ZERO_MAC}}),
            ))
        relay_drivers = {opts.vfio_driver, relay_driver} - {None}
        relayed = traces.relay_path is not None or (mode == FORWARDER and mac_is_ports)
        if (relayed and traces.vf_driver in relay_drivers and traces.pf_driver
                and traces.pf_driver != traces.vf_driver):
            steps.append(Step(
                f"give VF {vf.address} back to {traces.pf_driver}",
                Operation("bind_driver", {"address": vf.address, "driver": traces.pf_driver}),
            ))
        if rep and home and rep != home and rep in traces.port_names:
            steps.append(Step(
                f"rename representor {rep} back to {home}",
                Operation("configure_link", {"ifname": rep, "new_name": home}),
            ))
    return Plan("unplug", traces.port_id, mode or "unknown", tuple(steps),
                vf_address=vf.address if vf else None)
