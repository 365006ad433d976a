"""Bringing plugged ports back after ``sim reboot`` on a simulated SmartNIC host.

One simulated host (1 PF x ``--ports`` VFs, private OVS, forwarder
simulator), ``--ports`` ports (``--forwarder`` of them virtio-forwarder, the
rest passthrough), plugged the way Nova plugs them (``os_vif.plug`` of the
VIFs Nova builds: plugin ``agilio_ovs``, representors renamed to ``tap<port
id>``). Each round, side by side:

- **fresh plug** (the baseline): ``os_vif.plug`` of every port on a host that
  has none plugged;
- ``sim reboot`` (timed for information only);
- **Nova's path**: ``os_vif.plug`` of every port again, as nova-compute's
  ``init_host`` does after a reboot, by plugins that start with nothing
  cached (a new nova-compute process);
- ``sim reboot`` again;
- **reconcile**: ``smartnic-vif reconcile`` as its own process (wall time,
  Python start-up included), which repairs every plugged port once
  reconcile's repair of plugged ports is in (issue 16, item 3);
- every port unplugged, for the next round.

After each of the two restores the host is checked port by port (OVS
interface with an ofport, VF MAC, representor name and up, relay for the
forwarder ports) and the number of ports restored is printed beside the time.
Normal ports are left out: they have no journal row for reconcile to read.

Goal: reconcile restores 128 ports in under 10 s here.
Usage (root): ``.venv/bin/python benchmarks/reboot.py [--ports 128] [--forwarder 32]
[--rounds 3]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

import os_vif
from oslo_config import cfg

from smartnic_vif import conf
from smartnic_vif.decisions import vif_builder
from smartnic_vif.host import privileged
from smartnic_vif.host.discovery import discover
from smartnic_vif.host.ovsdb import OvsdbClient, close_all
from smartnic_vif.host.rtnl import IFF_UP
from smartnic_vif.sim.host import SimulatedHost
from smartnic_vif.sim.ovs import PrivateOVS

PLUGINS = ("smartnic", "agilio_ovs")


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def forget_plugin_state() -> None:
    """What a new nova-compute process starts with: no cached host clients,
    inventory or state store in the loaded plugins."""
    manager = os_vif._EXT_MANAGER
    assert manager is not None
    for name in PLUGINS:
        plugin = manager[name].obj
        if plugin._host is not None:
            plugin._host.close()
        plugin._host = plugin._store = plugin._ovs_plugin = None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ports", type=int, default=128)
    parser.add_argument("--forwarder", type=int, default=32,
                        help="how many of the ports are virtio-forwarder ports (default 32)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n = args.ports
    host = SimulatedHost.create(tempfile.mkdtemp(prefix="snv-bench-", dir="/tmp"),
                                pfs=1, vfs_per_pf=n)
    try:
        conf.register(cfg.CONF)
        cfg.CONF(args=[], default_config_files=[host.config_file])
        privileged.start()
        os_vif.initialize()
        with OvsdbClient(cfg.CONF[conf.GROUP].ovsdb_connection, 10) as ovsdb:
            ovsdb.ensure_bridge("br-int", "netdev")
        vfs = list(discover(host.dir).vfs())[:n]
        inst = vif_builder.instance_info(str(uuid.uuid4()), "bench")
        network = {"id": str(uuid.uuid4()), "mtu": 1500}
        ports = []
        for i, vf in enumerate(vfs):
            port_id = str(uuid.uuid4())
            forwarder = i >= n - args.forwarder
            details: dict[str, Any] = {"bridge_name": "br-int", "datapath_type": "netdev",
                                       "port_filter": False, "ovs_hybrid_plug": False}
            if forwarder:
                details.update(vhostuser_socket=os.path.join(host.layout.vhost_dir,
                                                             ("vhu" + port_id)[:14]),
                               vhostuser_mode="server", vhostuser_ovs_plug=True)
            port = {
                "id": port_id, "mac_address": f"fa:16:3e:02:{i >> 8:02x}:{i & 0xFF:02x}",
                "network_id": network["id"],
                "binding:vnic_type": "virtio-forwarder" if forwarder else "direct",
                "binding:vif_type": "agilio_ovs", "binding:vif_details": details,
                "binding:profile": {} if forwarder else {"capabilities": ["switchdev"]},
                "status": "ACTIVE",
            }
            ports.append((port, vf, vif_builder.build_vif(port, network=network, vf=vf,
                                                          upstream=True)))
        ovs = PrivateOVS(host.layout.ovs_dir)
        cli = [sys.executable, "-m", "smartnic_vif.cli.main", "--config-file", host.config_file]

        def plug_all() -> None:
            for _port, _vf, vif in ports:
                os_vif.plug(vif, inst)

        def unplug_all() -> None:
            for _port, _vf, vif in reversed(ports):
                os_vif.unplug(vif, inst)

        def reconcile() -> None:
            proc = subprocess.run([*cli, "reconcile", "--json"],  # noqa: S603 - fixed argv
                                  capture_output=True, text=True, timeout=600)
            if proc.returncode != 0:
                raise RuntimeError(f"reconcile failed: {proc.stdout}{proc.stderr}")

        def restored() -> int:
            """Ports that show everything a plugged port shows."""
            from pyroute2 import IPRoute

            ofports = {row[0]: row[1] for row in json.loads(ovs.vsctl(
                "--format=json", "--columns=name,ofport", "list", "Interface"))["data"]}
            with IPRoute() as ipr:
                up = {m.get_attr("IFLA_IFNAME"): bool(m["flags"] & IFF_UP)
                      for m in ipr.get_links()}
            relays = {(str(r["device"]).lower(), r.get("vhost_path")) for r in host.relays()}
            ok = 0
            for port, vf, vif in ports:
                name = vif_builder.devname_for_port(port["id"])
                good = (isinstance(ofports.get(name), int) and ofports[name] > 0
                        and up.get(name) is True
                        and host.kernel_state(vf.address)["mac"] == port["mac_address"])
                if port["binding:vnic_type"] == "virtio-forwarder":
                    good = good and (vf.address, vif.path) in relays
                ok += good
            return ok

        def settle() -> int:
            """ovs-vswitchd finds a renamed interface on its next
            reconfiguration: wait for it (up to 5 s) before counting."""
            deadline = time.monotonic() + 5
            while (count := restored()) < n and time.monotonic() < deadline:
                time.sleep(0.1)
            return count

        times: dict[str, list[float]] = {"fresh plug": [], "sim reboot": [],
                                         "Nova's path": [], "reconcile": []}
        counts: dict[str, list[int]] = {"fresh plug": [], "Nova's path": [], "reconcile": []}
        # Warm-up: one plug and unplug (OVSDB connection, privsep daemons, caches).
        os_vif.plug(ports[0][2], inst)
        os_vif.unplug(ports[0][2], inst)
        for _ in range(args.rounds):
            times["fresh plug"].append(timed(plug_all))
            counts["fresh plug"].append(settle())
            times["sim reboot"].append(timed(host.reboot))
            forget_plugin_state()
            times["Nova's path"].append(timed(plug_all))
            counts["Nova's path"].append(settle())
            times["sim reboot"].append(timed(host.reboot))
            forget_plugin_state()
            times["reconcile"].append(timed(reconcile))
            counts["reconcile"].append(settle())
            forget_plugin_state()
            unplug_all()

        base = statistics.median(times["fresh plug"])
        print(f"{n} ports ({n - args.forwarder} passthrough, {args.forwarder} forwarder), "
              f"{args.rounds} rounds, times in s")
        print(f"{'run':14} {'median':>8} {'min':>8} {'max':>8} {'/ fresh plug':>13}"
              f" {'ports restored':>15}")
        for name, samples in times.items():
            got = counts.get(name)
            print(f"{name:14} {statistics.median(samples):8.2f} {min(samples):8.2f}"
                  f" {max(samples):8.2f} {statistics.median(samples) / base:13.2f}"
                  f" {(f'{min(got)}-{max(got)}/{n}' if got else '-'):>15}")
        print("\ngoal: reconcile restores every port in under 10 s")
    finally:
        privileged.stop()
        close_all()
        host.destroy()


if __name__ == "__main__":
    main()
