"""Subcommands of ``smartnic-vif``; each one is a small function over the
library, so that tests and the demo call the same code."""

from __future__ import annotations

import argparse
import os
from typing import Any

from smartnic_vif.cli import render
from smartnic_vif.cli.main import EXIT_FAILED, EXIT_OK, UsageError, load_config


def register(sub: Any) -> None:
    p = sub.add_parser("inventory", help="PFs, VFs, representors, drivers and claims")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_inventory)

    p = sub.add_parser("sim", help="create, restart-forwarder, reboot, set-offload or "
                       "destroy a simulated SmartNIC host")
    simsub = p.add_subparsers(dest="sim_command", required=True, metavar="ACTION")
    c = simsub.add_parser("create", help="build a simulated host in DIR")
    c.add_argument("--dir", required=True)
    c.add_argument("--pfs", type=int, default=2, help="switchdev PFs (default 2)")
    c.add_argument("--vfs-per-pf", type=int, default=8)
    c.add_argument("--legacy-pfs", type=int, default=0,
                   help="extra classic SR-IOV PFs (no switchdev, no representors)")
    c.add_argument("--port-name-form", default="pfXvfY",
                   choices=["pfXvfY", "vfY", "Y", "cZpfXvfY"])
    c.add_argument("--driver", default="nfp", choices=["nfp", "mlx5_core"])
    c.add_argument("--max-relays", type=int, default=32,
                   help="the forwarder's relay slots (default 32, as Debian's DPDK build)")
    c.add_argument("--no-hw-offload", dest="hw_offload", action="store_false",
                   help="leave OVS other_config:hw-offload unset (ovs-vswitchd then adds no "
                   "tc qdisc to its ports)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(handler=cmd_sim_create)
    d = simsub.add_parser("destroy", help="stop and remove the simulated host in DIR")
    d.add_argument("--dir", required=True)
    d.set_defaults(handler=cmd_sim_destroy)
    r = simsub.add_parser(
        "restart-forwarder",
        help="restart the simulated virtio-forwarder in DIR (its relays are gone, "
        "as after a real daemon restart)",
    )
    r.add_argument("--dir", required=True)
    r.set_defaults(handler=cmd_sim_restart_forwarder)
    b = simsub.add_parser("reboot", help="do to the simulated host in DIR what a reboot does")
    b.add_argument("--dir", required=True)
    b.set_defaults(handler=cmd_sim_reboot)
    o = simsub.add_parser(
        "set-offload", help="turn offload on or off on the simulated host in DIR (OVS "
        "hw-offload, representors' hw-tc-offload, PFs' eswitch mode), for doctor")
    o.add_argument("--dir", required=True)
    state = o.add_mutually_exclusive_group(required=True)
    state.add_argument("--on", dest="on", action="store_true")
    state.add_argument("--off", dest="on", action="store_false")
    o.add_argument("--ovs", dest="parts", action="append_const", const="ovs",
                   help="OVS other_config:hw-offload (set to true, or removed)")
    o.add_argument("--representors", dest="parts", action="append_const",
                   const="representors", help="the representors' hw-tc-offload")
    o.add_argument("--eswitch", dest="parts", action="append_const", const="eswitch",
                   help="the PFs' devlink eswitch mode (switchdev, or legacy)")
    o.add_argument("--vf", action="append", metavar="ADDRESS",
                   help="only this VF's representor (repeatable; implies --representors)")
    o.add_argument("--pf", action="append", metavar="ADDRESS",
                   help="only this PF (repeatable; implies --eswitch)")
    o.set_defaults(handler=cmd_sim_set_offload)


def inventory_rows(inventory: Any, claims: dict[str, str]) -> list[dict[str, Any]]:
    rows = []
    for pf in inventory.pfs:
        for vf in pf.vfs:
            rows.append(
                {
                    "pf": pf.address,
                    "pf_netdev": pf.netdev,
                    "vf": vf.address,
                    "vf_index": vf.index,
                    "driver": vf.driver,
                    "netdev": vf.netdev,
                    "switchdev": vf.switchdev,
                    "representor": vf.representor.name if vf.representor else None,
                    "port_name": vf.representor.port_name if vf.representor else None,
                    "numa_node": vf.numa_node,
                    "vendor": f"{vf.vendor_id}:{vf.product_id}",
                    "claimed_by": claims.get(vf.address),
                }
            )
    return rows


def _claims(group: Any) -> dict[str, str]:
    from smartnic_vif.host.state import StateStore

    if not os.path.exists(os.path.join(group.state_path, "state.db")):
        return {}
    return StateStore(group.state_path).claims()


def forwarder_relays(group: Any) -> dict[str, Any]:
    """The relay limit of virtio-forwarder and its use, from its stats: the
    daemon lists every slot, so the slots are the limit and only those with a
    socket or a VF count as used. ``error`` says why they are unknown."""
    from smartnic_vif.host.forwarder.client import ForwarderClient
    from smartnic_vif.model.errors import SmartNICError

    stats = group.forwarder_stats_endpoint
    if stats.startswith("ipc://") and not os.path.exists(stats.removeprefix("ipc://")):
        # Nothing listens there: say so without waiting for the timeout.
        return {"relays_total": None, "relays_in_use": None,
                "error": f"virtio-forwarder is not running (no {stats})"}
    try:
        with ForwarderClient(group.forwarder_port_control_endpoint,
                             group.forwarder_stats_endpoint,
                             min(group.forwarder_timeout, 2.0)) as fwd:
            usage = fwd.relay_usage()
    except SmartNICError as e:
        return {"relays_total": None, "relays_in_use": None, "error": str(e)}
    return {"relays_total": usage.total, "relays_in_use": usage.used, "error": None}


def cmd_inventory(args: argparse.Namespace) -> int:
    from smartnic_vif.host.discovery import discover

    group = load_config(args)
    inventory = discover(group.sysfs_root)
    claims = _claims(group)
    rows = inventory_rows(inventory, claims)
    relays = forwarder_relays(group)
    if args.json:
        render.emit_json({"sysfs_root": inventory.sysfs_root,
                          "pfs": inventory.to_dict()["pfs"], "vfs": rows,
                          "forwarder": relays})
        return EXIT_OK
    pf_rows = [
        (pf.address, pf.netdev, pf.driver, "switchdev" if pf.switchdev else "legacy",
         pf.switch_id, pf.numa_node, f"{pf.num_vfs}/{pf.total_vfs}")
        for pf in inventory.pfs
    ]
    render.table(("PF", "NETDEV", "DRIVER", "ESWITCH", "SWITCH ID", "NUMA", "VFS"), pf_rows)
    print()
    render.table(
        ("VF", "PF", "#", "DRIVER", "NETDEV", "REPRESENTOR", "PORT NAME", "NUMA", "CLAIMED BY"),
        [(r["vf"], r["pf"], r["vf_index"], r["driver"], r["netdev"], r["representor"],
          r["port_name"], r["numa_node"], r["claimed_by"]) for r in rows],
    )
    print()
    if relays["error"] is None:
        print(f"virtio-forwarder relays: {relays['relays_in_use']} of "
              f"{relays['relays_total']} in use")
    else:
        print(f"virtio-forwarder relays: unknown ({relays['error']})")
    return EXIT_OK


def cmd_sim_create(args: argparse.Namespace) -> int:
    from smartnic_vif.sim.host import SimulatedHost, SimulatorValueError

    progress = render.Progress()
    progress.step(f"creating a simulated host with {args.pfs} x {args.vfs_per_pf} VFs in {args.dir}"
                  " (sysfs tree, veth pairs, namespaces, OVS, forwarder)...")
    try:
        host = SimulatedHost.create(
            args.dir, pfs=args.pfs, vfs_per_pf=args.vfs_per_pf, legacy_pfs=args.legacy_pfs,
            port_name_form=args.port_name_form, driver=args.driver, max_relays=args.max_relays,
            hw_offload=args.hw_offload,
        )
    except SimulatorValueError as e:
        progress.done()
        # Named as the option the user typed it with.
        raise UsageError(f"--{e.parameter.replace('_', '-')} {e.value}: {e.reason}") from e
    progress.done()
    info = {"dir": host.dir, "config_file": host.config_file, "processes": host.processes(),
            "representors": len(host.existing_links()),
            "namespaces": len(host.existing_namespaces())}
    if args.json:
        render.emit_json(info)
    else:
        print(f"simulated SmartNIC host ready in {host.dir}")
        print(f"  use it with: smartnic-vif --config-file {host.config_file} inventory")
    return EXIT_OK


def _load_sim(dir: str) -> Any:
    """The simulated host in ``dir``; none there is the user's mistake (exit 2)."""
    from smartnic_vif.sim.host import SimulatedHost, SimulatorError

    try:
        return SimulatedHost.load(dir)
    except SimulatorError as e:
        raise UsageError(str(e)) from e


def cmd_sim_destroy(args: argparse.Namespace) -> int:
    host = _load_sim(args.dir)
    progress = render.Progress()
    progress.step(f"stopping OVS and the forwarder, removing veths and namespaces of {args.dir}...")
    host.destroy()
    progress.done()
    print(f"simulated host in {args.dir} destroyed")
    if kept := host.kept_entries():
        print(f"  kept {host.dir}: it holds what sim create did not make ({', '.join(kept)})")
    return EXIT_OK if not host.existing_links() else EXIT_FAILED


def cmd_sim_restart_forwarder(args: argparse.Namespace) -> int:
    host = _load_sim(args.dir)
    progress = render.Progress()
    progress.step(f"restarting the simulated virtio-forwarder of {args.dir}...")
    host.restart_forwarder()
    progress.done()
    print(f"virtio-forwarder of {args.dir} restarted (pid "
          f"{host.processes().get('virtio-forwarder-sim')}); it has no relays")
    return EXIT_OK


def cmd_sim_reboot(args: argparse.Namespace) -> int:
    host = _load_sim(args.dir)
    progress = render.Progress()
    progress.step(f"rebooting the simulated host in {args.dir} (VFs, representors, OVS, "
                  "forwarder)...")
    host.reboot()
    progress.done()
    print(f"simulated host in {host.dir} rebooted")
    return EXIT_OK


def cmd_sim_set_offload(args: argparse.Namespace) -> int:
    from smartnic_vif.sim.host import OFFLOAD_PARTS, SimulatorError, SimulatorValueError

    host = _load_sim(args.dir)
    # --vf and --pf name their part; no part at all means every part.
    parts = args.parts or [part for option, part in (("vf", "representors"), ("pf", "eswitch"))
                           if getattr(args, option)] or list(OFFLOAD_PARTS)
    for option, part in (("vf", "representors"), ("pf", "eswitch")):
        if getattr(args, option) and part not in parts:
            raise UsageError(f"--{option} is for --{part}, which is not given")
    try:
        host.set_offload(args.on, parts, vfs=args.vf, pfs=args.pf)
    except SimulatorValueError as e:
        raise UsageError(f"--{e.parameter} {e.value}: {e.reason}") from e
    except SimulatorError as e:
        raise UsageError(str(e)) from e
    print(f"offload {'on' if args.on else 'off'} ({', '.join(parts)}) on the simulated host "
          f"in {host.dir}")
    return EXIT_OK
