"""Read commands on a big simulated SmartNIC host: wall time as processes.

One simulated host (``--pfs`` x ``--vfs-per-pf`` VFs, 4 x 256 by default,
private OVS, forwarder simulator) in a network namespace of its own, with
``--ports`` ports plugged through ``os_vif.plug`` (``--forwarder`` of them
virtio-forwarder, the rest passthrough). Then, ``--runs`` times, in turn:

- ``python -c pass``: the interpreter's own start, the baseline of the run;
- ``smartnic-vif inventory --json``, ``status --json``, ``doctor --json``,
  each as its own process (``python -m smartnic_vif.cli.main``), wall time
  from start to exit.

Also discovery of the whole host in this process (``discover``), ``--runs``
times. Printed: wall time (min, median, max, and the median less the
baseline's), CPU time (user + system, of the process alone: less sensitive
to other load on a shared machine than wall time) and the exit statuses
(``status`` and ``doctor`` exit 1 when they find something to report).
Goal (issue 19): each command 250 ms or less, discovery of 1,024 VFs 50 ms
or less.

The package's bytecode is compiled first, as an installed package has it
(this machine sets PYTHONDONTWRITEBYTECODE, so a source tree on
PYTHONPATH would otherwise be compiled again by every process).

Usage (root): ``.venv/bin/python benchmarks/read.py [--pfs 4] [--vfs-per-pf 256]
[--ports 64] [--forwarder 16] [--runs 10]``
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

import os_vif
from common import private_netns, tear_down  # benchmarks/common.py (the scripts' folder)
from os_vif import objects as o
from oslo_config import cfg

from smartnic_vif import conf
from smartnic_vif.decisions import vif_builder
from smartnic_vif.host import privileged
from smartnic_vif.host.discovery import discover
from smartnic_vif.host.ovsdb import OvsdbClient
from smartnic_vif.osvif.objects import VIFPortProfileForwarder, VIFPortProfilePassthrough
from smartnic_vif.sim.host import SimulatedHost

COMMANDS = ("inventory", "status", "doctor")




def plug_ports(host: SimulatedHost, ports: int, forwarder: int) -> list[Any]:
    """Plug ``ports`` ports (the first ``forwarder`` of them virtio-forwarder,
    the rest passthrough) through os-vif, on VFs spread over every PF."""
    group = cfg.CONF[conf.GROUP]
    OvsdbClient(group.ovsdb_connection, 10).ensure_bridge("br-int", "netdev")
    inventory = discover(host.dir)
    per_pf = -(-ports // len(inventory.pfs))
    vfs = [vf for pf in inventory.pfs for vf in pf.vfs[:per_pf]][:ports]
    net = o.network.Network(id=str(uuid.uuid4()), bridge="br-int", mtu=1500)
    inst = vif_builder.instance_info(str(uuid.uuid4()), "bench")
    vifs: list[Any] = []
    for i, vf in enumerate(vfs):
        port_id = str(uuid.uuid4())
        mac = f"fa:16:3e:bb:{i >> 8:02x}:{i & 0xFF:02x}"
        if i < forwarder:
            vif = o.vif.VIFVHostUser(
                id=port_id, address=mac, network=net, plugin="smartnic",
                vif_name=("tap" + port_id)[:14],
                path=f"{host.layout.vhost_dir}/vhu{port_id[:11]}", mode="server",
                port_profile=VIFPortProfileForwarder(interface_id=port_id,
                                                     representor_address=vf.address))
        else:
            vif = o.vif.VIFHostDevice(
                id=port_id, address=mac, network=net, plugin="smartnic", dev_type="ethernet",
                dev_address=vf.address,
                port_profile=VIFPortProfilePassthrough(interface_id=port_id,
                                                       representor_address=vf.address))
        os_vif.plug(vif, inst)
        vifs.append(vif)
    return vifs


def run_timed(argv: list[str]) -> tuple[float, float, int]:
    """Wall time and CPU time (user + system, from the child's rusage) of
    one process, in ms, and its exit status."""
    t = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL,  # noqa: S603
                             stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    took = (time.perf_counter() - t) * 1000.0
    child.returncode = os.waitstatus_to_exitcode(status)
    return took, (usage.ru_utime + usage.ru_stime) * 1000.0, child.returncode


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pfs", type=int, default=4)
    parser.add_argument("--vfs-per-pf", type=int, default=256)
    parser.add_argument("--ports", type=int, default=64)
    parser.add_argument("--forwarder", type=int, default=16)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    import smartnic_vif

    compileall.compile_dir(os.path.dirname(smartnic_vif.__file__), quiet=1)
    private_netns()
    started = time.perf_counter()
    host = SimulatedHost.create(tempfile.mkdtemp(prefix="snv-read-", dir="/tmp"),
                                pfs=args.pfs, vfs_per_pf=args.vfs_per_pf,
                                max_relays=max(args.forwarder, 32))
    made = time.perf_counter() - started
    vifs: list[Any] = []
    inst = vif_builder.instance_info(str(uuid.uuid4()), "bench")
    try:
        conf.register(cfg.CONF)
        cfg.CONF(args=[], default_config_files=[host.config_file])
        privileged.start()
        os_vif.initialize()
        vifs = plug_ports(host, args.ports, args.forwarder)
        cli = [sys.executable, "-m", "smartnic_vif.cli.main", "--config-file",
               host.config_file]
        runs: dict[str, list[float]] = {"python -c pass": []}
        runs.update({f"{c} --json": [] for c in COMMANDS})
        cpu: dict[str, list[float]] = {name: [] for name in runs}
        exits: dict[str, set[int]] = {name: set() for name in runs}
        for _ in range(args.runs):
            for name in runs:
                argv = ([sys.executable, "-c", "pass"] if name == "python -c pass"
                        else [*cli, *name.split()])
                took, used, rc = run_timed(argv)
                runs[name].append(took)
                cpu[name].append(used)
                exits[name].add(rc)
        found, found_cpu = [], []
        for _ in range(args.runs):
            t, c = time.perf_counter(), time.process_time()
            inventory = discover(host.dir)
            found.append((time.perf_counter() - t) * 1000.0)
            found_cpu.append((time.process_time() - c) * 1000.0)
        vf_count = len(list(inventory.vfs()))

        base = statistics.median(runs["python -c pass"])
        print(f"{args.pfs} x {args.vfs_per_pf} VFs ({vf_count} found), {len(vifs)} ports "
              f"plugged ({args.forwarder} virtio-forwarder), {args.runs} runs; ms "
              f"(host made in {made:.1f} s)")
        print(f"{'what':24} {'wall min':>9} {'median':>8} {'max':>8} {'-python':>8}"
              f" {'cpu min':>8} {'median':>8} {'exit':>5}")
        for name, t in runs.items():
            med = statistics.median(t)
            print(f"{name:24} {min(t):9.1f} {med:8.1f} {max(t):8.1f} {med - base:8.1f}"
                  f" {min(cpu[name]):8.1f} {statistics.median(cpu[name]):8.1f}"
                  f" {','.join(map(str, sorted(exits[name]))):>5}")
        print(f"{'discover (in-process)':24} {min(found):9.1f} {statistics.median(found):8.1f}"
              f" {max(found):8.1f} {'':8} {min(found_cpu):8.1f}"
              f" {statistics.median(found_cpu):8.1f}")
    finally:
        tear_down(vifs, inst, host)


if __name__ == "__main__":
    main()
