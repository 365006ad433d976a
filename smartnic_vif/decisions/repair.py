"""Which steps of a plugged port's plan the host no longer reflects.

A plugged port's journalled plug plan says what the host must look like while
it is plugged. Things change behind the plugin's back: a virtio-forwarder
restart forgets every relay, a host reboot gives the VFs back their defaults
and driver and the representors their kernel names (down), an operator edits
OVS. :func:`plan_repair` compares the plan with an :class:`ObservedPort` (read
by :func:`smartnic_vif.host.observe.observe_port`) and returns, in plan order,
the ``do`` operations to run again, each with what was wrong. Every ``do`` is
idempotent, so re-running one that was needed is exact; hooks never run again.
Nothing here touches the host.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from smartnic_vif.decisions.plan import Operation, Plan
from smartnic_vif.decisions.plug import LinkState

# external_ids keys ovs_set_port writes, and the operation argument each comes from.
_EXTERNAL_IDS = (("iface-id", "iface_id"), ("attached-mac", "mac"), ("vm-uuid", "vm_uuid"))
_IFACE_STATUS = "active"


@dataclass(frozen=True)
class OvsPortState:
    """An OVS port as the repair needs it (its Interface of the same name)."""

    bridge: str | None
    external_ids: Mapping[str, str]
    mtu_request: int | None


@dataclass(frozen=True)
class ObservedPort:
    """The host as it is, for everything a plug plan names.

    A name, path or bridge the reader could not look at is absent from its
    mapping (``errors`` says why), and nothing is decided about it."""

    vf_settings: Mapping[str, Any] | None = None
    vf_driver: str | None = None
    vf_driver_known: bool = False
    links: Mapping[str, LinkState | None] = field(default_factory=dict)  # None: no such link
    ovs_ports: Mapping[str, OvsPortState | None] = field(default_factory=dict)
    bridges: Mapping[str, bool] = field(default_factory=dict)
    relays: Mapping[str, str | None] = field(default_factory=dict)  # path -> paired VF
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class Repair:
    """Run ``do`` (step ``step`` of the plan) again because of ``problem``.

    ``title`` says what is done. A follow-up check (``problem`` None) runs
    after the repairs without being one."""

    step: int
    title: str
    do: Operation
    problem: str | None

    def describe(self) -> str:
        return f"{self.problem} -> {self.title}" if self.problem else self.title


def link_names(plan: Plan) -> set[str]:
    """Every link name the plan's ``do`` operations name (to observe)."""
    names: set[str] = set()
    for step in plan.steps:
        if step.do.name in ("configure_link", "confirm_link_up"):
            names.add(step.do.args["ifname"])
            if step.do.args.get("new_name"):
                names.add(step.do.args["new_name"])
    return names


def _norm_mac(value: Any) -> str | None:
    return str(value).lower() if value is not None else None


def _onoff(value: Any) -> str:
    return "on" if value else "off"


def _vf_problems(wanted: Mapping[str, Any], actual: Mapping[str, Any]) -> list[str]:
    problems = []
    for key, want in wanted.items():
        if key not in actual:
            continue  # not reported by this kernel: nothing to compare
        have = actual[key]
        if key == "mac":
            if _norm_mac(have) != _norm_mac(want):
                problems.append(f"VF MAC is {have}, expected {want}")
        elif key in ("trust", "spoofchk"):
            if bool(have) != bool(want):
                problems.append(f"VF {key} is {_onoff(have)}, expected {_onoff(want)}")
        elif have != want:
            problems.append(f"VF {key.upper() if key == 'vlan' else key} is {have}, "
                            f"expected {want}")
    return problems


def _link_problems(op: Operation, links: Mapping[str, LinkState | None],
                   aliases: Mapping[str, str]) -> list[str] | None:
    """What ``configure_link`` would change; None when the link is not observed.

    ``aliases``: a renamed link's name before the rename (the plan's first
    step renames it), where a reboot puts it back."""
    args = op.args
    target = str(args.get("new_name") or args["ifname"])
    candidates = [n for n in (target, args["ifname"], aliases.get(target)) if n]
    if not any(n in links for n in candidates):
        return None
    name = next((n for n in candidates if links.get(n) is not None), None)
    if name is None:
        return [f"representor {' or '.join(dict.fromkeys(candidates))} does not exist"]
    state = links[name]
    assert state is not None
    problems = []
    if args.get("new_name") and name != target:
        problems.append(f"representor is named {name}, expected {target}")
    if args.get("mtu") is not None and state.mtu != args["mtu"]:
        problems.append(f"{target} has MTU {state.mtu}, expected {args['mtu']}")
    if args.get("up") is not None and state.up != args["up"]:
        problems.append(f"{target} is {'up' if state.up else 'down'}, "
                        f"expected {'up' if args['up'] else 'down'}")
    if args.get("promisc") is not None and state.promisc != args["promisc"]:
        problems.append(f"{target} is {'' if state.promisc else 'not '}promiscuous, expected "
                        f"{'' if args['promisc'] else 'not '}promiscuous")
    return problems


def _ovs_problems(args: Mapping[str, Any], port: OvsPortState | None) -> list[str]:
    name, bridge = args["port"], args["bridge"]
    if port is None:
        return [f"OVS port {name} is missing from {bridge}"]
    problems = []
    if port.bridge != bridge:
        problems.append(f"OVS port {name} is on {port.bridge}, expected {bridge}")
    wanted = {key: str(args[arg]) for key, arg in _EXTERNAL_IDS}
    wanted["iface-status"] = _IFACE_STATUS
    for key, want in wanted.items():
        have = port.external_ids.get(key)
        same = _norm_mac(have) == _norm_mac(want) if key == "attached-mac" else have == want
        if not same:
            problems.append(f"OVS port {name} external_ids:{key} is {have}, expected {want}")
    if args.get("mtu") is not None and port.mtu_request != args["mtu"]:
        problems.append(f"OVS port {name} mtu_request is {port.mtu_request}, "
                        f"expected {args['mtu']}")
    return problems


def plan_repair(plan: Plan, observed: ObservedPort) -> list[Repair]:
    """The ``do`` steps of ``plan`` (a plug plan of a plugged port) that the
    observed host no longer reflects, in plan order, each with its problem;
    then, if there is any, the plan's link checks (``confirm_link_up``: OVS
    may take a representor down while it adds the port again)."""
    repairs: list[Repair] = []
    checks: list[Repair] = []
    aliases = {str(s.do.args["new_name"]): str(s.do.args["ifname"]) for s in plan.steps
               if s.do.name == "configure_link" and s.do.args.get("new_name")}
    missing_reported = False
    for index, step in enumerate(plan.steps):
        op, args = step.do, step.do.args
        problems: list[str] | None = []
        if op.name == "configure_link":
            problems = _link_problems(op, observed.links, aliases)
            if problems and "does not exist" in problems[0]:
                # Said once; every later step on the link fails the same way.
                problems = [] if missing_reported else problems
                missing_reported = True
        elif op.name == "bind_driver":
            if observed.vf_driver_known and observed.vf_driver != args["driver"]:
                problems = [f"VF driver is {observed.vf_driver}, expected {args['driver']}"]
        elif op.name == "set_vf":
            if observed.vf_settings is not None:
                problems = _vf_problems(args["settings"], observed.vf_settings)
        elif op.name == "ovs_set_port":
            if args["port"] in observed.ovs_ports:
                problems = _ovs_problems(args, observed.ovs_ports[args["port"]])
        elif op.name == "ensure_bridge":
            if observed.bridges.get(args["bridge"]) is False:
                problems = [f"bridge {args['bridge']} is missing"]
        elif op.name == "forwarder_add":
            path = args["vhost_path"]
            if path in observed.relays:
                paired = observed.relays[path]
                if paired is None:
                    problems = [f"no virtio-forwarder relay pairs {args['vf_address']} "
                                f"with {path}"]
                elif paired != args["vf_address"]:
                    problems = [f"virtio-forwarder pairs {path} with {paired}, "
                                f"expected {args['vf_address']}"]
        elif op.name == "confirm_link_up":
            checks.append(Repair(index, step.title, op, None))
        if problems:
            repairs.append(Repair(index, step.title, op, "; ".join(problems)))
    return repairs + checks if repairs else []
