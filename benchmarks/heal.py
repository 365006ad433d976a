"""How fast ``reconcile --watch`` heals forwarder ports after a virtio-forwarder restart.

One simulated SmartNIC host (1 PF x ``--ports`` VFs, private OVS, forwarder
simulator) in a network namespace of its own; ``--ports`` forwarder ports
(32 by default) plugged through ``os_vif.plug``; ``smartnic-vif reconcile
--watch`` running as its own process, as under systemd.

Each round restarts the forwarder simulator (SIGTERM, then started again; it
comes back with no relay, as the real daemon does) three times:

- **floor**: with the watch stopped (SIGSTOP), this process adds the relays
  back itself, ``--ports`` bare ADD_SOCK requests on one client: the least
  any repair must do once the daemon answers;
- **one-shot**: with the watch stopped, ``smartnic-vif reconcile`` run as a
  process (startup, config, privileged helper, OVSDB connection, then the
  repairs);
- **watch**: with the watch running, nothing else.

Times are from the restarted daemon answering (the simulator is listening:
its pidfile and socket exist) until its stats list every port's relay again
(polled every 10 ms on the stats endpoint); "from kill" adds the time the
old daemon took to stop and the new one to start. The ratio is each median
over the floor's, measured in the same rounds.

Usage (root): ``.venv/bin/python benchmarks/heal.py [--ports 32] [--rounds 5]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
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
from smartnic_vif.host.forwarder.client import ForwarderClient
from smartnic_vif.host.ovsdb import OvsdbClient
from smartnic_vif.osvif.objects import VIFPortProfileForwarder
from smartnic_vif.sim.host import SimulatedHost


def relays_in_use(client: ForwarderClient) -> set[str]:
    """The VFs the daemon relays now (a VM that is not connected shows its
    socket as "NONE", so the VF is what identifies a relay)."""
    try:
        stats = client.stats()
    except Exception:  # the daemon is not (yet) answering
        return set()
    return {r.vf_ident.lower() for r in stats if r.in_use and r.vf_ident}


def restart(host: SimulatedHost) -> tuple[float, float]:
    """Restart the forwarder simulator; (when it was killed, when it answers)."""
    killed = time.perf_counter()
    host.restart_forwarder()
    return killed, time.perf_counter()


def wait_all(client: ForwarderClient, pairs: set[str], limit: float = 60) -> float:
    end = time.perf_counter() + limit
    while not pairs <= relays_in_use(client):
        if time.perf_counter() > end:
            raise RuntimeError(f"relays not back within {limit} s")
        time.sleep(0.01)
    return time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ports", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    n = args.ports
    private_netns()
    host = SimulatedHost.create(tempfile.mkdtemp(prefix="snv-heal-", dir="/tmp"),
                                pfs=1, vfs_per_pf=n)
    watch: subprocess.Popen[Any] | None = None
    log_dir = tempfile.mkdtemp(prefix="snv-heal-log-")
    vifs: list[Any] = []
    inst = vif_builder.instance_info(str(uuid.uuid4()), "bench")
    try:
        conf.register(cfg.CONF)
        cfg.CONF(args=[], default_config_files=[host.config_file])
        group = cfg.CONF[conf.GROUP]
        privileged.start()
        os_vif.initialize()
        OvsdbClient(group.ovsdb_connection, 10).ensure_bridge("br-int", "netdev")
        vfs = list(discover(host.dir).vfs())[:n]
        net = o.network.Network(id=str(uuid.uuid4()), bridge="br-int", mtu=1500)
        for i, vf in enumerate(vfs):
            port_id = str(uuid.uuid4())
            vifs.append(o.vif.VIFVHostUser(
                id=port_id, address=f"fa:16:3e:aa:{i >> 8:02x}:{i & 0xFF:02x}", network=net,
                plugin="smartnic", vif_name=("tap" + port_id)[:14],
                path=f"{host.layout.vhost_dir}/vhu{port_id[:11]}", mode="server",
                port_profile=VIFPortProfileForwarder(interface_id=port_id,
                                                     representor_address=vf.address)))
            os_vif.plug(vifs[-1], inst)
        pairs = {v.port_profile.representor_address.lower() for v in vifs}
        client = ForwarderClient(group.forwarder_port_control_endpoint,
                                 group.forwarder_stats_endpoint, 2.0)
        assert relays_in_use(client) == pairs

        cli = [sys.executable, "-m", "smartnic_vif.cli.main", "--config-file",
               host.config_file]
        log_path = os.path.join(log_dir, "watch.log")
        with open(log_path, "w") as log:
            watch = subprocess.Popen([*cli, "reconcile", "--watch"],  # noqa: S603
                                     stdout=log, stderr=subprocess.STDOUT)
        while "watching" not in open(log_path).read():
            time.sleep(0.05)

        results: dict[str, list[float]] = {"floor": [], "one-shot": [], "watch": []}
        from_kill: dict[str, list[float]] = {k: [] for k in results}
        for _ in range(args.rounds):
            # floor
            watch.send_signal(signal.SIGSTOP)
            killed, back = restart(host)
            client.close()
            client = ForwarderClient(group.forwarder_port_control_endpoint,
                                     group.forwarder_stats_endpoint, 2.0)
            for v in vifs:
                client.add_sock(v.port_profile.representor_address, v.path)
            done = wait_all(client, pairs)
            results["floor"].append(done - back)
            from_kill["floor"].append(done - killed)
            # one-shot reconcile, as a process
            killed, back = restart(host)
            subprocess.run([*cli, "reconcile"], check=True,  # noqa: S603
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            done = wait_all(client, pairs)
            results["one-shot"].append(done - back)
            from_kill["one-shot"].append(done - killed)
            # the watch
            watch.send_signal(signal.SIGCONT)
            time.sleep(1.0)  # let it look at the healed daemon once
            killed, back = restart(host)
            done = wait_all(client, pairs)
            results["watch"].append(done - back)
            from_kill["watch"].append(done - killed)
            time.sleep(1.0)  # its pass is over before the next round stops it
        client.close()

        floor = statistics.median(results["floor"])
        print(f"{n} forwarder ports, {args.rounds} rounds; seconds from the restarted "
              "forwarder answering until every relay is back")
        print(f"{'how':10} {'median':>8} {'min':>8} {'max':>8} {'from kill':>10} {'/floor':>8}")
        for name, t in results.items():
            print(f"{name:10} {statistics.median(t):8.3f} {min(t):8.3f} {max(t):8.3f}"
                  f" {statistics.median(from_kill[name]):10.3f}"
                  f" {statistics.median(t) / floor:8.2f}")
    finally:
        if watch is not None:
            watch.send_signal(signal.SIGCONT)
            watch.send_signal(signal.SIGTERM)
            rc = watch.wait(timeout=30)
            print(f"watch exited with status {rc}")
        tear_down(vifs, inst, host)
        shutil.rmtree(log_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
