"""Plug/unplug latency per mode on a simulated SmartNIC host with 64 VFs.

Everything runs in one process against one private OVS, side by side:

- floor: a bare ovsdbapp transaction adding a representor as an OVS port with
  its external_ids (and removing it), the least any plug must do, measured
  again right before each mode;
- stock: os-vif's own ``ovs`` plugin plugging the normal-mode ports;
- normal, passthrough, forwarder: this project's plugin.

Prints p50/p95 per mode and each mode's p50 as a ratio to the floor measured
just before it and to the stock plugin's.
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
                                pfs=1, vfs_per_pf=n)
    taps: list[str] = []
    try:
        conf.register(cfg.CONF)
        cfg.CONF(args=[], default_config_files=[host.config_file])
        privileged.start()
        os_vif.initialize()
        inventory = discover(host.dir)
        vfs = list(inventory.vfs())[:n]
        net = o.network.Network(id=str(uuid.uuid4()), bridge="br-int", mtu=1500)
        inst = vif_builder.instance_info(str(uuid.uuid4()), "bench")
        results: dict[str, tuple[list[float], list[float]]] = {}

        # Warm everything once (OVSDB connection, privsep daemons, bridge).
        from smartnic_vif.host.ovsdb import OvsdbClient

        ovsdb = OvsdbClient(cfg.CONF[conf.GROUP].ovsdb_connection, 10)
        ovsdb.ensure_bridge("br-int", "netdev")
        api = ovsdb.api

        def floor_add(rep: str, pid: str, mac: str) -> None:
            with api.transaction(check_error=True) as txn:
                txn.add(api.add_port("br-int", rep, may_exist=True))
                txn.add(api.db_set("Interface", rep, ("external_ids", {
                    "iface-id": pid, "iface-status": "active", "attached-mac": mac,
                    "vm-uuid": inst.uuid})))

        def floor_del(rep: str) -> None:
            api.del_port(rep, if_exists=True).execute(check_error=True)

        def run(name: str, plug: Callable[[int], None], unplug: Callable[[int], None]) -> None:
            plug(0)
            unplug(0)  # warm-up, not counted
            before = cpu_ticks()
            p = [timed(lambda i=i: plug(i)) for i in range(n)]
            after = cpu_ticks()
            u = [timed(lambda i=i: unplug(i)) for i in reversed(range(n))]
            results[name] = (p, u)
            hz = os.sysconf("SC_CLK_TCK")
            cpu[name] = {who: (after[who] - before.get(who, 0)) * 1000.0 / hz / n
                         for who in after}

        ids = [str(uuid.uuid4()) for _ in range(n)]
        macs = [f"fa:16:3e:01:{i >> 8:02x}:{i & 0xFF:02x}" for i in range(n)]
        reps = [vf.representor.name for vf in vfs if vf.representor]

        floors: dict[str, float] = {}
        cpu: dict[str, dict[str, float]] = {}

        def floor(mode: str) -> float:
            """The floor, measured again right before each mode: loading
            os-vif's stock plugin starts a second OVSDB connection in this
            process, and every mode after it (and its floor) pays for it."""
            run("floor", lambda i: floor_add(reps[i], ids[i], macs[i]),
                lambda i: floor_del(reps[i]))
            cpu[f"floor, before {mode}"] = cpu.pop("floor")
            return statistics.median(results.pop("floor")[0])

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
        floors["stock ovs plugin"] = floor("stock ovs plugin")
        run("stock ovs plugin", lambda i: os_vif.plug(stock[i], inst),
            lambda i: os_vif.unplug(stock[i], inst))
        floors["normal"] = floor("normal")
        run("normal", lambda i: os_vif.plug(ours_normal[i], inst),
            lambda i: os_vif.unplug(ours_normal[i], inst))

        passthrough = [o.vif.VIFHostDevice(
            id=ids[i], address=macs[i], network=net, plugin="smartnic", dev_type="ethernet",
            dev_address=vfs[i].address,
            port_profile=VIFPortProfilePassthrough(
                interface_id=ids[i], representor_address=vfs[i].address))
            for i in range(n)]
        floors["passthrough"] = floor("passthrough")
        run("passthrough", lambda i: os_vif.plug(passthrough[i], inst),
            lambda i: os_vif.unplug(passthrough[i], inst))

        forwarder = [o.vif.VIFVHostUser(
            id=ids[i], address=macs[i], network=net, plugin="smartnic", vif_name=taps[i],
            path=f"{host.layout.vhost_dir}/vhu{ids[i][:11]}", mode="server",
            port_profile=VIFPortProfileForwarder(
                interface_id=ids[i], representor_address=vfs[i].address))
            for i in range(n)]
        floors["forwarder"] = floor("forwarder")
        run("forwarder", lambda i: os_vif.plug(forwarder[i], inst),
            lambda i: os_vif.unplug(forwarder[i], inst))

        stock_p50 = statistics.median(results["stock ovs plugin"][0])
        print(f"{n} ports per mode, times in ms (warm: one plug/unplug before measuring)")
        print(f"{'mode':18} {'plug p50':>9} {'plug p95':>9} {'unplug p50':>11} {'unplug p95':>11}"
              f" {'floor p50':>10} {'p50/floor':>10} {'p50/stock':>10}")
        for name, (p, u) in results.items():
            p50 = statistics.median(p)
            print(f"{name:18} {p50:9.2f} {pct(p, .95):9.2f} {statistics.median(u):11.2f}"
                  f" {pct(u, .95):11.2f} {floors[name]:10.2f} {p50 / floors[name]:10.2f}"
                  f" {p50 / stock_p50:10.2f}")
        print("\nCPU per plug in ms (all processes share the machine's cores; clock ticks,"
              " so +-0.2 ms)")
        whos = ["this process", "privsep helpers", "ovs-vswitchd", "ovsdb-server",
                "forwarder sim"]
        print(f"{'run':28} " + " ".join(f"{w:>16}" for w in whos) + f" {'total':>8}")
        for name, used in cpu.items():
            print(f"{name:28} " + " ".join(f"{used.get(w, 0.0):16.2f}" for w in whos)
                  + f" {sum(used.get(w, 0.0) for w in whos):8.2f}")
    finally:
        for tap in taps:
            subprocess.run(["/usr/sbin/ip", "link", "del", tap],  # noqa: S603
                           capture_output=True)
        privileged.stop()
        host.destroy()


if __name__ == "__main__":
    main()
