"""Plug/unplug latency per mode on a simulated SmartNIC host with 64 VFs.

Everything runs in one process against one private OVS, side by side:

- floor: a bare ovsdbapp transaction adding a representor as an OVS port with
  its external_ids (and removing it), the least any plug must do;
- stock: os-vif's own ``ovs`` plugin plugging the normal-mode ports;
- normal, passthrough, forwarder: this project's plugin.

The floor uses representors of VFs the modes never use (the host has twice
as many VFs as ports), brought up first: a plugged representor is up, and
ovs-vswitchd's userspace datapath polls every up port on each turn of its
main loop, so a floor of down ports would run on a cheaper bridge.

Each mode runs ``--rounds`` rounds of a floor block (64 transactions, then
their ports removed) and a plug block (64 plugs, then 64 unplugs), the order
alternating from round to round. In a block the same work runs back to
back, warm, on a bridge that grows from 0 to 64 up ports, as in the other
block. The ratio p50/floor compares the two blocks' samples of all rounds;
the per-round range shows the machine's drift.

Then a pass interleaves the two port by port (which goes first
alternates), as session 3 measured: the same moment for both, but each
floor transaction then runs right after a plug, on caches a plug has just
filled with its own code and data, which makes the floor slower than in a
block; so this ratio flatters the plug and is printed for comparison only.

The stock plugin runs last. It opens an OVSDB connection of its own, which
replicates every Interface column (statistics included) and stays open; from
then on its thread parses every update beside ours, and a multi-threaded
plug suffers more from that than the floor's single wait does (our normal
plug measured 5.1 ms before that connection existed and 7.4 ms after it,
stock's own plug 5.9 ms either way). Nova-compute has that connection only if
it also plugs ports with os-vif's own ``ovs`` plugin.

CPU per process (clock ticks) is measured over the blocks and printed per
floor transaction and per plug, and so are some of ovs-vswitchd's coverage
counters (:data:`COVERAGE`: its reconfigurations, revalidations, link
changes heard, tc policing calls and main-loop poll nodes), which say what
work each one made it do.

Growth: with more ports than ``--block`` (64), each mode's plugs and floor
transactions are also reported per block of 64 as the bridge grows (ports
0-63, 64-127, ...): plug p50, floor p50, their ratio, that ratio over the
first block's, and this process's CPU per plug and per floor transaction
(p50; what of the growth is our code's and what OVS's).
``--mode passthrough --ports 256`` runs passthrough alone on a bridge
growing to 256 ports (the host then has 2 PFs of 256 VFs).
Usage (root): ``.venv/bin/python benchmarks/plug.py [--ports 64] [--rounds 3]
[--mode all|stock|normal|passthrough|forwarder] [--block 64]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

import os_vif
from os_vif import objects as o
from oslo_config import cfg

from smartnic_vif import conf
from smartnic_vif.decisions import vif_builder
from smartnic_vif.host import privileged
from smartnic_vif.host.discovery import discover
from smartnic_vif.host.ovsdb import OvsdbClient, close_all
from smartnic_vif.osvif.objects import VIFPortProfileForwarder, VIFPortProfilePassthrough
from smartnic_vif.sim.host import SimulatedHost


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def cpu_ticks() -> dict[str, int]:
    """CPU time (clock ticks) used so far by the processes a plug involves:
    this one, its privileged helpers, OVS and the forwarder simulator."""
    ticks: dict[str, int] = {}
    me = os.getpid()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        ppid, used = int(fields[1]), int(fields[11]) + int(fields[12])
        if int(pid) == me:
            who = "this process"
        elif "smartnic_vif.sim.forwarder" in argv:
            who = "forwarder sim"
        elif ppid == me:
            who = "privsep helpers"  # forked: same command line as this one
        elif os.path.basename(argv[0]) in ("ovs-vswitchd", "ovsdb-server"):
            who = os.path.basename(argv[0])
        else:
            continue
        ticks[who] = ticks.get(who, 0) + used
    return ticks


# ovs-vswitchd's coverage counters that say what a port costs it: a
# reconfiguration of its bridges (one per OVSDB change it applies), a
# revalidation of its flows, a link change heard from the kernel, the tc
# policing it sets on every interface at each reconfiguration, and the
# poll nodes of its main loop (about its wake-ups times the ports it polls).
COVERAGE = ("bridge_reconfigure", "rev_reconfigure", "nln_changed", "netdev_set_policing",
            "poll_create_node")


def vswitchd_events(ovs_dir: str) -> dict[str, int]:
    """ovs-vswitchd's :data:`COVERAGE` counters so far (``ovs-appctl``)."""
    counts = {}
    for name in COVERAGE:
        proc = subprocess.run(  # noqa: S603 - fixed argv
            ["ovs-appctl", "-t", os.path.join(ovs_dir, "ovs-vswitchd.ctl"),
             "coverage/read-counter", name], capture_output=True, text=True, check=True)
        counts[name] = int(proc.stdout.strip() or 0)
    return counts


def timed(fn: Callable[[], Any], cpu: list[float] | None = None) -> float:
    """Wall ms of ``fn()``; with ``cpu``, also append this process's CPU ms
    (all its threads: ovsdbapp's included)."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    if cpu is not None:
        cpu.append((time.process_time() - c) * 1000.0)
    return (time.perf_counter() - t) * 1000.0


MODES = ("stock", "normal", "passthrough", "forwarder")


def growth(times: dict[str, list[float]], n: int, block: int) -> list[tuple[Any, ...]]:
    """(first port, last port, then the p50 of plug, floor, plug CPU and
    floor CPU here) per block of ``block`` ports; samples are in port
    order, ``n`` per round."""
    rows = []
    for start in range(0, n, block):
        end = min(n, start + block)
        pick = [i for i in range(len(times["plug"])) if start <= i % n < end]
        rows.append((start, end - 1, *(statistics.median(times[k][i] for i in pick)
                                       for k in ("plug", "floor", "plug cpu", "floor cpu"))))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ports", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mode", choices=("all", *MODES), default="all",
                        help="run one mode alone (default: all four)")
    parser.add_argument("--block", type=int, default=64,
                        help="report growth per block of this many ports (default 64)")
    args = parser.parse_args()
    n = args.ports
    modes = MODES if args.mode == "all" else (args.mode,)
    # Twice as many VFs as ports (the floor's representors), at most 256 per
    # PF. A daemon with a relay slot per forwarder port (Debian's DPDK build
    # has 32; the slots' number changes nothing else of a plug; the
    # simulator has at most 128).
    if "forwarder" in modes and n > 128:
        parser.error(f"--ports {n}: the forwarder simulator has at most 128 relays; "
                     "use --mode passthrough (or normal, stock)")
    pfs = -(-2 * n // 256)
    host = SimulatedHost.create(tempfile.mkdtemp(prefix="snv-bench-", dir="/tmp"),
                                pfs=pfs, vfs_per_pf=-(-2 * n // pfs),
                                max_relays=min(max(n, 32), 128))
    taps: list[str] = []
    try:
        conf.register(cfg.CONF)
        cfg.CONF(args=[], default_config_files=[host.config_file])
        privileged.start()
        os_vif.initialize()
        inventory = discover(host.dir)
        all_vfs = list(inventory.vfs())
        vfs, floor_vfs = all_vfs[:n], all_vfs[n:2 * n]
        net = o.network.Network(id=str(uuid.uuid4()), bridge="br-int", mtu=1500)
        inst = vif_builder.instance_info(str(uuid.uuid4()), "bench")
        results: dict[str, dict[str, list[float]]] = {}
        cpu: dict[str, dict[str, float]] = {}
        spread: dict[str, tuple[float, float, float]] = {}
        hz = os.sysconf("SC_CLK_TCK")

        # Warm everything once (OVSDB connection, privsep daemons, bridge).

        ovsdb = OvsdbClient(cfg.CONF[conf.GROUP].ovsdb_connection, 10)
        ovsdb.ensure_bridge("br-int", "netdev")
        api = ovsdb.api
        floor_reps = [vf.representor.name for vf in floor_vfs if vf.representor]
        floor_ids = [str(uuid.uuid4()) for _ in range(n)]
        # Up, as every plugged representor is (see the module docstring).
        subprocess.run(["/usr/sbin/ip", "-batch", "-"], check=True, text=True,  # noqa: S603
                       input="".join(f"link set {rep} up\n" for rep in floor_reps))

        def floor_add(i: int) -> None:
            with api.transaction(check_error=True) as txn:
                txn.add(api.add_port("br-int", floor_reps[i], may_exist=True))
                txn.add(api.db_set("Interface", floor_reps[i], ("external_ids", {
                    "iface-id": floor_ids[i], "iface-status": "active",
                    "attached-mac": macs[i], "vm-uuid": inst.uuid})))

        def floor_del(i: int) -> None:
            api.del_port(floor_reps[i], if_exists=True).execute(check_error=True)

        def add_ticks(total: dict[str, float], before: dict[str, int]) -> None:
            for who, used in cpu_ticks().items():
                total[who] = total.get(who, 0.0) + used - before.get(who, 0)

        events: dict[str, dict[str, float]] = {}

        def add_events(total: dict[str, float], before: dict[str, int]) -> None:
            for name, count in vswitchd_events(host.layout.ovs_dir).items():
                total[name] = total.get(name, 0.0) + count - before[name]

        def run(name: str, plug: Callable[[int], None], unplug: Callable[[int], None],
                prepare: Callable[[], None] = lambda: None) -> None:
            prepare()
            plug(0)
            unplug(0)  # warm-up, not counted
            floor_add(0)
            floor_del(0)
            times: dict[str, list[float]] = {"plug": [], "unplug": [], "floor": [],
                                             "plug cpu": [], "floor cpu": []}
            rounds: list[float] = []
            floor_ticks: dict[str, float] = {}
            plug_ticks: dict[str, float] = {}
            floor_events: dict[str, float] = {}
            plug_events: dict[str, float] = {}
            for r in range(args.rounds):
                got: dict[str, list[float]] = {"plug": [], "floor": []}
                for block in (("floor", "plug") if r % 2 == 0 else ("plug", "floor")):
                    if block == "floor":
                        counted = vswitchd_events(host.layout.ovs_dir)
                        before = cpu_ticks()
                        got["floor"] += [timed(lambda i=i: floor_add(i), times["floor cpu"])
                                         for i in range(n)]
                        add_ticks(floor_ticks, before)
                        add_events(floor_events, counted)
                        for i in range(n):
                            floor_del(i)
                    else:
                        prepare()
                        counted = vswitchd_events(host.layout.ovs_dir)
                        before = cpu_ticks()
                        got["plug"] += [timed(lambda i=i: plug(i), times["plug cpu"])
                                        for i in range(n)]
                        add_ticks(plug_ticks, before)
                        add_events(plug_events, counted)
                        for i in reversed(range(n)):
                            times["unplug"].append(timed(lambda i=i: unplug(i)))
                rounds.append(statistics.median(got["plug"]) / statistics.median(got["floor"]))
                times["plug"] += got["plug"]
                times["floor"] += got["floor"]
            # For comparison: floor and plug interleaved port by port.
            mixed: dict[str, list[float]] = {"plug": [], "floor": []}
            prepare()
            for i in range(n):
                pair = [("plug", plug), ("floor", floor_add)]
                for kind, fn in (pair if i % 2 else reversed(pair)):
                    mixed[kind].append(timed(lambda fn=fn, i=i: fn(i)))
            for i in reversed(range(n)):
                unplug(i)
                floor_del(i)
            results[name] = times
            spread[name] = (min(rounds), max(rounds),
                            statistics.median(mixed["plug"]) / statistics.median(mixed["floor"]))
            ops = n * args.rounds
            cpu[f"{name}: floor"] = {w: t * 1000.0 / hz / ops for w, t in floor_ticks.items()}
            cpu[f"{name}: plug"] = {w: t * 1000.0 / hz / ops for w, t in plug_ticks.items()}
            events[f"{name}: floor"] = {k: v / ops for k, v in floor_events.items()}
            events[f"{name}: plug"] = {k: v / ops for k, v in plug_events.items()}

        ids = [str(uuid.uuid4()) for _ in range(n)]
        macs = [f"fa:16:3e:01:{i >> 8:02x}:{i & 0xFF:02x}" for i in range(n)]

        taps += [("tap" + ids[i])[:14] for i in range(n)]

        def make_taps() -> None:
            """The normal-mode ports' taps, made again where an unplug took
            them away (os-vif's stock plugin deletes the tap): the stock
            plugin and ours then always plug the same, existing devices."""
            subprocess.run(["/usr/sbin/ip", "-force", "-batch", "-"],  # noqa: S603
                           text=True, capture_output=True,
                           input="".join(f"link add {tap} type veth peer name bv{i}\n"
                                         for i, tap in enumerate(taps)))

        def ovs_vif(i: int, plugin: str) -> Any:
            return o.vif.VIFOpenVSwitch(
                id=ids[i], address=macs[i], network=net, plugin=plugin, vif_name=taps[i],
                bridge_name="br-int",
                port_profile=o.vif.VIFPortProfileOpenVSwitch(
                    interface_id=ids[i], datapath_type="netdev", create_port=True))

        stock = [ovs_vif(i, "ovs") for i in range(n)]
        ours_normal = [ovs_vif(i, "smartnic") for i in range(n)]
        if "normal" in modes:
            run("normal", lambda i: os_vif.plug(ours_normal[i], inst),
                lambda i: os_vif.unplug(ours_normal[i], inst), make_taps)

        passthrough = [o.vif.VIFHostDevice(
            id=ids[i], address=macs[i], network=net, plugin="smartnic", dev_type="ethernet",
            dev_address=vfs[i].address,
            port_profile=VIFPortProfilePassthrough(
                interface_id=ids[i], representor_address=vfs[i].address))
            for i in range(n)]
        if "passthrough" in modes:
            run("passthrough", lambda i: os_vif.plug(passthrough[i], inst),
                lambda i: os_vif.unplug(passthrough[i], inst))

        forwarder = [o.vif.VIFVHostUser(
            id=ids[i], address=macs[i], network=net, plugin="smartnic", vif_name=taps[i],
            path=f"{host.layout.vhost_dir}/vhu{ids[i][:11]}", mode="server",
            port_profile=VIFPortProfileForwarder(
                interface_id=ids[i], representor_address=vfs[i].address))
            for i in range(n)]
        if "forwarder" in modes:
            run("forwarder", lambda i: os_vif.plug(forwarder[i], inst),
                lambda i: os_vif.unplug(forwarder[i], inst))
        # Last: os-vif's stock plugin opens an OVSDB connection of its own
        # that replicates every Interface column and stays open; its thread
        # then competes with whatever runs after (see the docstring).
        if "stock" in modes:
            run("stock ovs plugin", lambda i: os_vif.plug(stock[i], inst),
                lambda i: os_vif.unplug(stock[i], inst), make_taps)

        stock_p50 = (statistics.median(results["stock ovs plugin"]["plug"])
                     if "stock ovs plugin" in results else None)
        print(f"{n} ports per mode, {args.rounds} rounds, times in ms (warm: one plug/unplug"
              " before measuring; floor and plugs in alternating blocks)")
        print(f"{'mode':18} {'plug p50':>9} {'plug p95':>9} {'unplug p50':>11} {'unplug p95':>11}"
              f" {'floor p50':>10} {'p50/floor':>10} {'rounds':>11} {'interleaved':>12}"
              f" {'p50/stock':>10}")
        for name in [m for m in ["stock ovs plugin", "normal", "passthrough", "forwarder"]
                     if m in results]:
            t = results[name]
            p50, floor50 = statistics.median(t["plug"]), statistics.median(t["floor"])
            low, high, interleaved = spread[name]
            print(f"{name:18} {p50:9.2f} {pct(t['plug'], .95):9.2f}"
                  f" {statistics.median(t['unplug']):11.2f} {pct(t['unplug'], .95):11.2f}"
                  f" {floor50:10.2f} {p50 / floor50:10.2f} {f'{low:.2f}-{high:.2f}':>11}"
                  f" {interleaved:12.2f}"
                  + (f" {p50 / stock_p50:10.2f}" if stock_p50 else f" {'-':>10}"))
        if n > args.block:
            print(f"\nGrowth: per block of {args.block} ports as the bridge grows (all rounds;"
                  " plug and floor in their own blocks, as above)")
            print(f"{'mode':18} {'ports':>9} {'plug p50':>9} {'floor p50':>10}"
                  f" {'p50/floor':>10} {'/first':>8} {'cpu here: plug':>15} {'floor':>7}")
            for name, t in results.items():
                rows = growth(t, n, args.block)
                first = rows[0][2] / rows[0][3]
                for start, end, plug50, floor50, plug_cpu, floor_cpu in rows:
                    print(f"{name:18} {f'{start}-{end}':>9} {plug50:9.2f} {floor50:10.2f}"
                          f" {plug50 / floor50:10.2f} {plug50 / floor50 / first:8.2f}"
                          f" {plug_cpu:15.2f} {floor_cpu:7.2f}")
        print("\nCPU in ms per floor transaction and per plug, over the blocks (all processes"
              " share the machine's cores; clock ticks)")
        whos = ["this process", "privsep helpers", "ovs-vswitchd", "ovsdb-server",
                "forwarder sim"]
        print(f"{'run':30} " + " ".join(f"{w:>16}" for w in whos) + f" {'total':>8}")
        for name, used in cpu.items():
            print(f"{name:30} " + " ".join(f"{used.get(w, 0.0):16.2f}" for w in whos)
                  + f" {sum(used.get(w, 0.0) for w in whos):8.2f}")
        print("\novs-vswitchd's events per floor transaction and per plug, over the blocks"
              " (its coverage counters)")
        print(f"{'run':30} " + " ".join(f"{c:>20}" for c in COVERAGE))
        for name, counts in events.items():
            print(f"{name:30} " + " ".join(f"{counts.get(c, 0.0):20.2f}" for c in COVERAGE))
    finally:
        for tap in taps:
            subprocess.run(["/usr/sbin/ip", "link", "del", tap],  # noqa: S603
                           capture_output=True)
        privileged.stop()
        # Before OVS goes, so nothing reports the lost connection: ours, and
        # the one os-vif's stock plugin opened for itself.
        close_all()
        if os_vif._EXT_MANAGER is not None:
            own = os_vif._EXT_MANAGER["ovs"].obj.ovsdb._ovsdb
            if own is not None:
                own.ovsdb_connection.stop()
        host.destroy()


if __name__ == "__main__":
    main()
