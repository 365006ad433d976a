"""Plug/unplug latency per mode on a simulated SmartNIC host with 64 VFs.

Everything runs in one process against one private OVS, side by side:

- floor: a bare ovsdbapp transaction adding a representor as an OVS port with
  its external_ids (and removing it), the least any plug must do;
- stock: os-vif's own ``ovs`` plugin plugging the normal-mode ports;
- normal, passthrough, forwarder: this project's plugin.

The floor is measured port by port *between* a mode's plugs, on representors
of VFs the modes never use (the host has twice as many VFs as ports): each
floor transaction and each plug see the same machine at the same moment and
a bridge with as many ports, and which of the pair goes first alternates.
This machine's noise moves by tens of percent within seconds, more than
what is measured.

Prints p50/p95 per mode and each mode's p50 as a ratio to its floor's p50 and
to the stock plugin's, and the median of the pairwise ratios. CPU per
process is measured over a separate pass of the floor alone and over the
interleaved pass: it is printed per floor transaction alone and per
plug + floor pair (a floor transaction on a bridge full of plugged, up ports
costs ovs-vswitchd more than one alone, so the difference is not the plug's
own CPU).
Usage (root): ``.venv/bin/python benchmarks/plug.py [--ports 64]``
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


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ports", type=int, default=64)
    args = parser.parse_args()
    n = args.ports
    host = SimulatedHost.create(tempfile.mkdtemp(prefix="snv-bench-", dir="/tmp"),
                                pfs=1, vfs_per_pf=2 * n)
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
        hz = os.sysconf("SC_CLK_TCK")

        # Warm everything once (OVSDB connection, privsep daemons, bridge).
        from smartnic_vif.host.ovsdb import OvsdbClient

        ovsdb = OvsdbClient(cfg.CONF[conf.GROUP].ovsdb_connection, 10)
        ovsdb.ensure_bridge("br-int", "netdev")
        api = ovsdb.api
        floor_reps = [vf.representor.name for vf in floor_vfs if vf.representor]
        floor_ids = [str(uuid.uuid4()) for _ in range(n)]

        def floor_add(i: int) -> None:
            with api.transaction(check_error=True) as txn:
                txn.add(api.add_port("br-int", floor_reps[i], may_exist=True))
                txn.add(api.db_set("Interface", floor_reps[i], ("external_ids", {
                    "iface-id": floor_ids[i], "iface-status": "active",
                    "attached-mac": macs[i], "vm-uuid": inst.uuid})))

        def floor_del(i: int) -> None:
            api.del_port(floor_reps[i], if_exists=True).execute(check_error=True)

        def per_plug(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
            return {who: (after[who] - before.get(who, 0)) * 1000.0 / hz / n for who in after}

        def run(name: str, plug: Callable[[int], None], unplug: Callable[[int], None]) -> None:
            plug(0)
            unplug(0)  # warm-up, not counted
            floor_add(0)
            floor_del(0)
            # The floor alone, for its CPU only.
            before = cpu_ticks()
            for i in range(n):
                floor_add(i)
            alone = per_plug(before, cpu_ticks())
            for i in range(n):
                floor_del(i)
            times: dict[str, list[float]] = {"plug": [], "unplug": [], "floor": []}
            before = cpu_ticks()
            for i in range(n):
                if i % 2:
                    times["plug"].append(timed(lambda i=i: plug(i)))
                    times["floor"].append(timed(lambda i=i: floor_add(i)))
                else:
                    times["floor"].append(timed(lambda i=i: floor_add(i)))
                    times["plug"].append(timed(lambda i=i: plug(i)))
            both = per_plug(before, cpu_ticks())
            for i in reversed(range(n)):
                times["unplug"].append(timed(lambda i=i: unplug(i)))
                floor_del(i)
            results[name] = times
            cpu[f"{name}: floor alone"] = alone
            cpu[f"{name}: plug + floor"] = both

        ids = [str(uuid.uuid4()) for _ in range(n)]
        macs = [f"fa:16:3e:01:{i >> 8:02x}:{i & 0xFF:02x}" for i in range(n)]

        for i in range(n):
            tap = ("tap" + ids[i])[:14]
            subprocess.run(["/usr/sbin/ip", "link", "add", tap, "type", "veth",  # noqa: S603
                            "peer", "name",
                            f"bv{i}"], check=True)
            taps.append(tap)

        def ovs_vif(i: int, plugin: str) -> Any:
            return o.vif.VIFOpenVSwitch(
                id=ids[i], address=macs[i], network=net, plugin=plugin, vif_name=taps[i],
                bridge_name="br-int",
                port_profile=o.vif.VIFPortProfileOpenVSwitch(
                    interface_id=ids[i], datapath_type="netdev", create_port=True))

        stock = [ovs_vif(i, "ovs") for i in range(n)]
        ours_normal = [ovs_vif(i, "smartnic") for i in range(n)]
        run("stock ovs plugin", lambda i: os_vif.plug(stock[i], inst),
            lambda i: os_vif.unplug(stock[i], inst))
        run("normal", lambda i: os_vif.plug(ours_normal[i], inst),
            lambda i: os_vif.unplug(ours_normal[i], inst))

        passthrough = [o.vif.VIFHostDevice(
            id=ids[i], address=macs[i], network=net, plugin="smartnic", dev_type="ethernet",
            dev_address=vfs[i].address,
            port_profile=VIFPortProfilePassthrough(
                interface_id=ids[i], representor_address=vfs[i].address))
            for i in range(n)]
        run("passthrough", lambda i: os_vif.plug(passthrough[i], inst),
            lambda i: os_vif.unplug(passthrough[i], inst))

        forwarder = [o.vif.VIFVHostUser(
            id=ids[i], address=macs[i], network=net, plugin="smartnic", vif_name=taps[i],
            path=f"{host.layout.vhost_dir}/vhu{ids[i][:11]}", mode="server",
            port_profile=VIFPortProfileForwarder(
                interface_id=ids[i], representor_address=vfs[i].address))
            for i in range(n)]
        run("forwarder", lambda i: os_vif.plug(forwarder[i], inst),
            lambda i: os_vif.unplug(forwarder[i], inst))

        stock_p50 = statistics.median(results["stock ovs plugin"]["plug"])
        print(f"{n} ports per mode, times in ms (warm: one plug/unplug before measuring;"
              " floor interleaved port by port)")
        print(f"{'mode':18} {'plug p50':>9} {'plug p95':>9} {'unplug p50':>11} {'unplug p95':>11}"
              f" {'floor p50':>10} {'p50/floor':>10} {'pairwise':>9} {'p50/stock':>10}")
        for name, t in results.items():
            p50, floor50 = statistics.median(t["plug"]), statistics.median(t["floor"])
            pairwise = statistics.median(a / b for a, b in zip(t["plug"], t["floor"], strict=True))
            print(f"{name:18} {p50:9.2f} {pct(t['plug'], .95):9.2f}"
                  f" {statistics.median(t['unplug']):11.2f} {pct(t['unplug'], .95):11.2f}"
                  f" {floor50:10.2f} {p50 / floor50:10.2f} {pairwise:9.2f}"
                  f" {p50 / stock_p50:10.2f}")
        print("\nCPU in ms per floor transaction alone, and per plug + floor pair in the"
              " interleaved pass (all processes share the machine's cores; clock ticks,"
              " so +-0.2 ms)")
        whos = ["this process", "privsep helpers", "ovs-vswitchd", "ovsdb-server",
                "forwarder sim"]
        print(f"{'run':34} " + " ".join(f"{w:>16}" for w in whos) + f" {'total':>8}")
        for name, used in cpu.items():
            print(f"{name:34} " + " ".join(f"{used.get(w, 0.0):16.2f}" for w in whos)
                  + f" {sum(used.get(w, 0.0) for w in whos):8.2f}")
    finally:
        for tap in taps:
            subprocess.run(["/usr/sbin/ip", "link", "del", tap],  # noqa: S603
                           capture_output=True)
        privileged.stop()
        host.destroy()


if __name__ == "__main__":
    main()
