"""``smartnic-vif demo``: the main job, end to end on a simulated SmartNIC host.

Creates a simulated host (2 PFs x 8 VFs, private OVS, virtio-forwarder
simulator) in a network namespace of its own, attaches one port in each mode
through the os-vif plugin, shows packets passing between the VMs' stand-ins
through OVS, shows OVS ports, relays and libvirt XML, restarts the
virtio-forwarder and then reboots the host and repairs the ports after each as
``reconcile`` does (packets pass again). Then it live-migrates the
virtio-forwarder port to a second simulated host joined to the first by a
link between their OVS bridges, in Nova's order, while the normal port's VM
pings it, and prints what the ping lost. Finally it detaches everything,
proves nothing is left on either host, destroys both and proves that nothing
is left of them either.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any, NamedTuple

from oslo_config import cfg

from smartnic_vif import conf
from smartnic_vif.cli import render
from smartnic_vif.cli.main import EXIT_FAILED, EXIT_OK

IP = "/usr/sbin/ip"
SUBNET = "10.77.0.{}/24"
PING_INTERVAL = 0.01  # seconds between the pings that measure the migration's downtime
ETH_P_RARP = 0x8035


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the end-to-end demo on a simulated SmartNIC host")
    p.add_argument("--keep", action="store_true", help="keep the simulated host for inspection")
    p.set_defaults(handler=cmd_demo)


class DemoFailure(RuntimeError):
    pass


def _say(title: str) -> None:
    print(f"\n=== {title}")


def _check(cond: bool, what: str) -> None:
    print(f"  [{'ok' if cond else 'FAIL'}] {what}")
    if not cond:
        raise DemoFailure(what)


def _netns_run(ns: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - fixed argv, no shell
        [IP, "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=30
    )


def _vm_nic(ns: str, ifname: str, address: str) -> None:
    from pyroute2 import NetNS  # here: every CLI command imports this module

    with NetNS(ns) as n:
        idx = n.link_lookup(ifname=ifname)[0]
        n.addr("add", index=idx, address=address.split("/")[0], prefixlen=24)
        n.link("set", index=idx, state="up")
        lo = n.link_lookup(ifname="lo")[0]
        n.link("set", index=lo, state="up")


class Attached(NamedTuple):
    """One port the demo attached, and the stand-in for its VM."""

    port: dict[str, Any]  # the Neutron port
    vif: Any
    vf: Any  # the VF (None for the normal port)
    before: dict[str, Any] | None  # the VF's simulated kernel state before the plug
    vm_ns: str  # the namespace the VM's NIC is in
    address: str  # the VM's address


def _ping_all(attached: list[Attached]) -> None:
    """Ping the normal and forwarder VMs from the passthrough one."""
    source = attached[1]
    for one in (attached[0], attached[2]):
        target = one.address.split("/")[0]
        result = _netns_run(source.vm_ns, "ping", "-c", "3", "-i", "0.2", "-W", "2", target)
        _check(result.returncode == 0,
               f"passthrough VM -> {one.port['binding:vnic_type']} VM ({target}): "
               + (result.stdout.strip().splitlines()[-2] if result.stdout.strip() else "no reply"))


def _repair_all(plugin: Any) -> None:
    """What ``smartnic-vif reconcile`` does for every plugged port (each
    repair printed here rather than logged as a warning too)."""
    import logging

    plugin_log = logging.getLogger("smartnic_vif.osvif.plugin")
    level = plugin_log.level
    plugin_log.setLevel(logging.ERROR)
    try:
        for record in plugin.store.all():
            for repair in plugin.repair(record.port_id):
                print(f"  port {record.port_id[:8]}: {repair}")
    finally:
        plugin_log.setLevel(level)


def _normal_vm_ns(host: Any) -> str:
    return f"sn{host.layout.sim_id}-vm-normal"


def cmd_demo(args: argparse.Namespace) -> int:
    from smartnic_vif.sim.host import SimulatedHost

    started = time.monotonic()
    progress = render.Progress()
    base = tempfile.mkdtemp(prefix="snv-demo-", dir="/tmp")
    _say(f"creating a simulated SmartNIC host in {base}")
    progress.step("creating sysfs tree, veth representors, private OVS, forwarder simulator...")
    # In a network namespace of its own (sn<id>-host): its userspace OVS
    # needs one (the ovs-netdev tap has a fixed name), the second host gets
    # another, and nothing the demo makes is in the namespace it runs in.
    try:
        host = SimulatedHost.create(base, pfs=2, vfs_per_pf=8, own_netns=True)
    except BaseException:
        with contextlib.suppress(OSError):
            os.rmdir(base)  # create took away what it had made
        raise
    progress.done()
    print(f"  processes: {host.processes()}, network namespace {host.layout.host_netns}")
    second: list[Any] = []  # the migration's destination host, once made
    ok = False
    try:
        # This thread (and the privileged helper it forks, which acts where
        # it was forked) runs in the host's namespace, where its
        # representors and OVS are.
        with host.inside():
            ok = _run(host, second)
    finally:
        # The normal port's "VM" namespace is the demo's, not the sim's (its
        # tap and the link between the hosts go with the hosts' namespaces).
        subprocess.run([IP, "netns", "del", _normal_vm_ns(host)], capture_output=True)  # noqa: S603
        if args.keep:
            for kept in (host, *second):
                print(f"\nkept the simulated host in {kept.dir} (network namespace "
                      f"{kept.layout.host_netns}); 'smartnic-vif sim destroy --dir {kept.dir}' "
                      "removes it")
        else:
            for n, gone in reversed(list(enumerate((host, *second), start=1))):
                try:
                    _destroy(gone, f"host {n}")
                except Exception as e:  # the other host must go all the same
                    ok = False
                    print(f"  [FAIL] destroying host {n}: {e}")
        print(f"\ndemo {'passed' if ok else 'FAILED'} in {time.monotonic() - started:.1f}s")
    return EXIT_OK if ok else EXIT_FAILED


def _destroy(host: Any, label: str) -> None:
    from smartnic_vif.host import ovsdb
    from smartnic_vif.sim.host import SimulatedHost

    _say(f"destroying the simulated {label}")
    ovsdb.close_connection(host.layout.ovsdb_connection)
    layout = host.layout
    host.destroy()
    leftovers = SimulatedHost(layout)
    _check(not leftovers.processes(), f"no OVS or forwarder process left ({label})")
    _check(not leftovers.existing_links(), f"no representor or uplink veth left ({label})")
    _check(not leftovers.existing_namespaces(), f"no network namespace left ({label})")
    _check(not os.path.exists(layout.dir), f"its directory {layout.dir} is gone ({label})")


def _run(host: Any, second: list[Any]) -> bool:
    import os_vif

    from smartnic_vif.cli.commands import inventory_rows
    from smartnic_vif.decisions import libvirt_xml, selection, vif_builder
    from smartnic_vif.decisions.pci_request import pci_request_for_port
    from smartnic_vif.host import privileged
    from smartnic_vif.host.discovery import discover
    from smartnic_vif.osvif.plugin import SmartNICPlugin

    try:
        conf.register(cfg.CONF)
    except cfg.DuplicateOptError:
        pass
    cfg.CONF(args=[], project="smartnic-vif", default_config_files=[host.config_file])
    group = cfg.CONF[conf.GROUP]
    privileged.start()
    os_vif.initialize()
    plugin = SmartNICPlugin(group)

    _say("inventory (discovered from the simulated sysfs tree)")
    inventory = discover(group.sysfs_root)
    rows = inventory_rows(inventory, {})
    render.table(("VF", "PF", "#", "DRIVER", "REPRESENTOR", "PORT NAME", "NUMA"),
                 [(r["vf"], r["pf"], r["vf_index"], r["driver"], r["representor"],
                   r["port_name"], r["numa_node"]) for r in rows[:4]])
    print(f"  ... {len(rows)} VFs on {len(inventory.pfs)} switchdev PFs")

    instance = vif_builder.instance_info(str(uuid.uuid4()), "demo-vm")
    network = {"id": str(uuid.uuid4()), "provider:network_type": "vxlan", "mtu": 1450}
    ports: list[dict[str, Any]] = []
    for n, vnic in enumerate(("normal", "direct", "virtio-forwarder"), start=1):
        port_id = str(uuid.uuid4())
        details: dict[str, Any] = {"bridge_name": "br-int", "datapath_type": "netdev",
                                   "port_filter": False, "ovs_hybrid_plug": False}
        if vnic == "virtio-forwarder":
            details.update(vhostuser_socket=f"{host.layout.vhost_dir}/vhu{port_id}"[:len(
                host.layout.vhost_dir) + 15], vhostuser_mode="server", vhostuser_ovs_plug=True)
        ports.append({
            "id": port_id,
            "mac_address": f"fa:16:3e:00:77:{n:02x}",
            "network_id": network["id"],
            "binding:vnic_type": vnic,
            "binding:vif_type": "ovs" if vnic == "normal" else "agilio_ovs",
            "binding:vif_details": details,
            "binding:profile": {"capabilities": ["switchdev"]} if vnic == "direct" else {},
            "status": "ACTIVE",
        })

    _say("attaching one port per mode through the os-vif plugin")
    attached: list[Attached] = []
    for n, port in enumerate(ports, start=1):
        request = pci_request_for_port(port, network)
        vf = None
        if request is not None:
            claims = {a.vf_address: a.port_id for a in plugin.store.all() if a.vf_address}
            vf = selection.select_vf(inventory, claims, request)
        vif = vif_builder.build_vif(port, network=network, vf=vf)
        if vf is None:
            # libvirt creates the tap of a normal port; here a veth whose far
            # end sits in the "VM" namespace stands in for it.
            ns = _normal_vm_ns(host)
            subprocess.run([IP, "netns", "add", ns], check=True)  # noqa: S603
            subprocess.run([IP, "link", "add", vif.vif_name, "type", "veth", "peer",  # noqa: S603
                            "name", "eth0", "netns", ns], check=True)
            subprocess.run([IP, "link", "set", vif.vif_name, "up"], check=True)  # noqa: S603
            vm_ns, vm_if = ns, "eth0"
            from pyroute2 import NetNS

            with NetNS(ns) as nsr:
                nsr.link("set", index=nsr.link_lookup(ifname="eth0")[0],
                         address=port["mac_address"])
        else:
            vm_ns, vm_if = host.vf_namespace(vf.address), host.vf_netdev(vf.address)
        before = host.kernel_state(vf.address) if vf else None
        os_vif.plug(vif, instance)
        mode = port["binding:vnic_type"]
        print(f"  {mode:17} port {port['id'][:8]} -> "
              + (f"VF {vf.address}, representor {vif.port_profile.representor_name}"
                 if vf else f"tap {vif.vif_name}"))
        _vm_nic(vm_ns, vm_if, SUBNET.format(n))
        attached.append(Attached(port, vif, vf, before, vm_ns, SUBNET.format(n)))

    _say("OVS ports on br-int (from OVSDB, with Neutron's external_ids)")
    ovsdb = plugin.host.ovsdb
    port_rows = []
    for one in attached:
        for info in ovsdb.find_ports_by_iface_id(one.port["id"]):
            port_rows.append((info.name, info.bridge, info.external_ids.get("iface-id", "")[:8],
                              info.external_ids.get("attached-mac"), info.mtu_request,
                              info.ofport))
    render.table(("PORT", "BRIDGE", "IFACE-ID", "ATTACHED-MAC", "MTU", "OFPORT"), port_rows)
    _check(len(port_rows) == 3, "three OVS ports, one per mode")

    _say("virtio-forwarder relays (stats endpoint of the forwarder simulator)")
    # The daemon lists every relay slot; count the ones in use.
    usage = plugin.host.forwarder.relay_usage()
    for r in usage.relays:
        # The daemon names the socket only once the VM has connected to it.
        print(f"  relay {r.relay_id}: VF {r.pci} <-> {r.vhost_path or '(no VM connected)'}")
    print(f"  {usage.used} of the daemon's {usage.total} relay slots in use")
    _check(usage.used == 1, "one relay, for the virtio-forwarder port")

    _say("libvirt interface XML")
    for one in attached:
        print(f"  -- {one.port['binding:vnic_type']}")
        for line in libvirt_xml.interface_for_vif(one.vif).splitlines():
            print("    " + line)
    req = libvirt_xml.domain_requirements("forwarder")
    needs = json.dumps(req.__dict__, default=str)
    print(f"  -- the forwarder port also needs in the domain: {needs}")

    _say("dataplane: ping between the VMs' stand-ins through OVS")
    _ping_all(attached)

    _say("virtio-forwarder restarted: it forgets every relay; reconcile's repair puts it back")
    host.restart_forwarder()
    _check(plugin.host.forwarder.relays_in_use() == [],
           "the restarted daemon has no relay: the forwarder port is dead")
    _repair_all(plugin)
    _check(len(plugin.host.forwarder.relays_in_use()) == 1, "the relay is back")
    _ping_all(attached)

    _say("host rebooted: VFs at their defaults, representors at their kernel names, "
         "no relay, OVS restarted from its database")
    host.reboot()
    for one in attached:
        if one.vf is not None:
            _check(plugin.host.vf_driver(one.vf.address) == "nfp"
                   and host.kernel_state(one.vf.address)["mac"] == "00:00:00:00:00:00",
                   f"VF {one.vf.address} is back on nfp with no MAC")
    _repair_all(plugin)
    # A reboot restarts the VMs too: their stand-ins get their addresses again.
    for one in attached:
        if one.vf is not None:
            _vm_nic(one.vm_ns, host.vf_netdev(one.vf.address), one.address)
    _ping_all(attached)

    destination = _migrate(host, second, plugin, attached, instance)

    _say("detaching everything")
    # The forwarder port left this host with its migration (source unplug).
    for _port, vif, vf, before, _ns, _address in reversed(attached[:2]):
        os_vif.unplug(vif, instance)
        if vf is not None:
            _check_restored(host, vf.address, before)
    _check(not any(ovsdb.find_ports_by_iface_id(one.port["id"]) for one in attached),
           "no OVS port left for the demo's ports (host 1)")
    _check(plugin.host.forwarder.relays_in_use() == [], "no virtio-forwarder relay left (host 1)")
    _check(plugin.store.all() == [], "no claim left in the state store (host 1)")
    now = discover(group.sysfs_root)
    _check([r["representor"] for r in inventory_rows(now, {})] == [r["representor"] for r in rows]
           and [r["driver"] for r in inventory_rows(now, {})] == [r["driver"] for r in rows],
           "every representor has its name back and every VF its driver (host 1)")
    destination.detach_and_check()
    privileged.stop()
    return True


def _check_restored(host: Any, vf_address: str, before: dict[str, Any] | None,
                    label: str = "") -> None:
    assert before is not None
    after = host.kernel_state(vf_address)
    keys = ("mac", "vlan", "trust", "spoofchk")
    _check({k: after[k] for k in keys} == {k: before[k] for k in keys},
           f"VF {vf_address} settings restored (MAC {after['mac']}){label}")


# -- live migration to a second host ---------------------------------------------------
class Destination:
    """The second simulated host, driven by the project's own CLI in
    processes of its own, run in its network namespace: the privileged
    helper takes its sysfs_root from its own process's configuration, and
    this process's helper serves the first host."""

    def __init__(self, host: Any) -> None:
        self.host = host
        self.port: dict[str, Any] | None = None
        self.vf: str | None = None
        self.before: dict[str, Any] | None = None
        self.inventory = self._inventory()
        # Each VF's simulated kernel state before the port arrives.
        self.states = {vf: host.kernel_state(vf) for vf, _rep, _driver in self.inventory}

    def cli(self, *argv: str) -> subprocess.CompletedProcess[str]:
        with self.host.inside():
            return subprocess.run(  # noqa: S603 - our own CLI, argv only
                [sys.executable, "-m", "smartnic_vif.cli.main",
                 "--config-file", self.host.config_file, *argv],
                capture_output=True, text=True, timeout=60)

    def _inventory(self) -> list[tuple[str, str, str | None]]:
        """(VF, representor, driver) of each VF."""
        from smartnic_vif.host.discovery import discover

        return [(vf.address, vf.representor.name if vf.representor else "", vf.driver)
                for pf in discover(self.host.dir).pfs for vf in pf.vfs]

    def attach(self, port: dict[str, Any], instance_uuid: str, mtu: int) -> str:
        result = self.cli("attach", "--port-id", port["id"], "--mac", port["mac_address"],
                          "--vnic-type", port["binding:vnic_type"],
                          "--instance-uuid", instance_uuid, "--mtu", str(mtu), "--json")
        _check(result.returncode == 0, "destination plug: 'smartnic-vif attach' on host 2"
               + ("" if result.returncode == 0 else f": {result.stderr.strip()}"))
        self.vf = str(json.loads(result.stdout)["vf"])
        self.port = port
        self.before = self.states[self.vf]
        return self.vf

    def detach_and_check(self) -> None:
        assert self.port is not None and self.vf is not None
        result = self.cli("detach", "--port-id", self.port["id"])
        _check(result.returncode == 0, f"port {self.port['id'][:8]} detached from host 2"
               + ("" if result.returncode == 0 else f": {result.stderr.strip()}"))
        _check_restored(self.host, self.vf, self.before, " (host 2)")
        status = self.cli("status", "--json")
        report = json.loads(status.stdout) if status.stdout.strip() else {}
        _check(status.returncode == 0 and report.get("ports") == []
               and report.get("unrestored") == [],
               "host 2's status: no claim, no drift, no unexplained OVS port or relay")
        _check(self.host.relays() == [], "no virtio-forwarder relay left (host 2)")
        _check(self._inventory() == self.inventory,
               "every representor has its name back and every VF its driver (host 2)")


def _link_name(host: Any) -> str:
    return f"sn{host.layout.sim_id}mig"


def _join(source: Any, destination: Any, source_ovsdb: Any) -> None:
    """A veth pair between the two hosts' namespaces, one end on each host's
    br-int: one L2 network, as a tunnel between two compute nodes gives."""
    from smartnic_vif.host.ovsdb import OvsdbClient

    here, there = _link_name(source), _link_name(destination)
    other = destination.layout.host_netns
    for argv in (["link", "add", here, "type", "veth", "peer", "name", there, "netns", other],
                 ["link", "set", here, "up"], ["-n", other, "link", "set", there, "up"]):
        subprocess.run([IP, *argv], check=True)  # noqa: S603 - fixed argv
    source_ovsdb.api.add_port("br-int", here, may_exist=True).execute(check_error=True)
    with OvsdbClient(destination.layout.ovsdb_connection, 10) as client:
        client.ensure_bridge("br-int", "netdev")  # a compute host has it before any port
        client.api.add_port("br-int", there, may_exist=True).execute(check_error=True)


def _unjoin(source: Any, destination: Any, source_ovsdb: Any) -> None:
    from smartnic_vif.host import ovsdb

    here, there = _link_name(source), _link_name(destination)
    source_ovsdb.api.del_port(here, bridge="br-int", if_exists=True).execute(check_error=True)
    with ovsdb.OvsdbClient(destination.layout.ovsdb_connection, 10) as client:
        client.api.del_port(there, bridge="br-int", if_exists=True).execute(check_error=True)
    ovsdb.close_connection(destination.layout.ovsdb_connection)
    subprocess.run([IP, "link", "del", here], check=True)  # noqa: S603 - its peer goes too


class Ping(NamedTuple):
    sent: int
    lost: int
    gap: float  # seconds between the last reply before the move and the first after it
    before_move: int  # replies received before the move
    after_move: int  # and after it


def _start_ping(ns: str, target: str) -> subprocess.Popen[str]:
    # -D: a timestamp on each reply; ip netns exec runs ping in its place
    # (its own session, so SIGINT reaches ping alone).
    return subprocess.Popen(  # noqa: S603 - fixed argv, no shell
        [IP, "netns", "exec", ns, "ping", "-D", "-n", "-i", str(PING_INTERVAL), target],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _stop_ping(proc: subprocess.Popen[str], moved_at: float) -> Ping:
    """Stop the ping (SIGINT: it prints its summary) and read its replies.
    Lost: sequence numbers with no reply up to the last one answered (those
    still on their way when it stopped are not lost)."""
    os.killpg(proc.pid, signal.SIGINT)
    out, _err = proc.communicate(timeout=10)
    replies = [(float(m[1]), int(m[2])) for m in
               re.finditer(r"^\[([0-9.]+)\] .*icmp_seq=(\d+) ", out, re.M)]
    sent = re.search(r"(\d+) packets transmitted", out)
    seqs = {seq for _, seq in replies}
    times = sorted(t for t, _ in replies)
    before = [t for t in times if t <= moved_at]
    after = [t for t in times if t > moved_at]
    return Ping(
        sent=int(sent[1]) if sent else 0,
        lost=(max(seqs) - len(seqs)) if seqs else 0,
        gap=after[0] - before[-1] if before and after else float("inf"),
        before_move=len(before),
        after_move=len(after),
    )


def _stage_guest(ns: str, ifname: str, mac: str, address: str) -> None:
    """The destination's guest before it runs (qemu started with -incoming):
    its NIC has the guest's MAC and address, and is down: it says nothing."""
    from pyroute2 import NetNS

    with NetNS(ns) as n:
        idx = n.link_lookup(ifname=ifname)[0]
        n.link("set", index=idx, state="down", address=mac)
        n.addr("add", index=idx, address=address.split("/")[0], prefixlen=24)
        n.link("set", index=n.link_lookup(ifname="lo")[0], state="up")


def _packet_socket(ns: str) -> socket.socket:
    """A raw packet socket in namespace ``ns`` (this thread enters it for the
    socket() call alone)."""
    from pyroute2 import netns

    target = os.open(os.path.join("/var/run/netns", ns), os.O_RDONLY | os.O_CLOEXEC)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        netns.setns(target, flags=0)
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_RARP))
        finally:
            netns.setns(own, flags=0)
    finally:
        os.close(own)
        os.close(target)
    return sock


def _announce(sock: socket.socket, ifname: str, mac: str) -> None:
    """What qemu does as soon as the guest runs on the destination
    (qemu_announce_self): broadcast RARP frames from the guest's MAC, so
    every switch on the way learns the MAC's new port at once. Until then
    the source host's bridge sends the guest's traffic to the old VF. Sent
    straight from the moved stand-in's namespace, on a raw socket."""
    hw = bytes.fromhex(mac.replace(":", ""))
    # Ethernet: broadcast, from the guest, RARP; then RARP "request reverse"
    # (Ethernet, IPv4, 6-byte and 4-byte addresses, op 3) from and for the
    # guest's MAC with no IP addresses; padded to the 60-byte minimum.
    frame = (b"\xff" * 6 + hw + struct.pack("!HHHBBH", ETH_P_RARP, 1, 0x0800, 6, 4, 3)
             + hw + bytes(4) + hw + bytes(4)).ljust(60, b"\0")
    for pause in (0.0, 0.05, 0.1):  # qemu: 5 rounds, 50 ms apart, then 100 ms more each
        time.sleep(pause)
        # Not bound: binding to a link that is down leaves an error pending.
        # The name is looked up in the socket's namespace.
        sock.sendto(frame, (ifname, ETH_P_RARP))


def _migrate(host: Any, second: list[Any], plugin: Any, attached: list[Attached],
             instance: Any) -> Destination:
    import os_vif

    from smartnic_vif.host import rtnl
    from smartnic_vif.sim.host import SimulatedHost

    _say("live migration of the virtio-forwarder port to a second simulated SmartNIC host")
    base = tempfile.mkdtemp(prefix="snv-demo-", dir="/tmp")
    try:
        other = SimulatedHost.create(base, pfs=1, vfs_per_pf=4, own_netns=True)
    except BaseException:
        with contextlib.suppress(OSError):
            os.rmdir(base)
        raise
    second.append(other)
    print(f"  host 2 in {base}, network namespace {other.layout.host_netns}: "
          f"{other.processes()}")
    _join(host, other, plugin.host.ovsdb)
    print(f"  link {_link_name(host)} (host 1's br-int) <-> {_link_name(other)} (host 2's br-int)")
    destination = Destination(other)
    normal, fwd = attached[0], attached[2]
    assert fwd.vf is not None
    target = fwd.address.split("/")[0]
    src_ns, src_if = fwd.vm_ns, host.vf_netdev(fwd.vf.address)
    guest_mac = rtnl.netns_socket(src_ns).get_link(src_if)
    assert guest_mac is not None
    mac = str(rtnl.link_fields(guest_mac).mac)

    ping = _start_ping(normal.vm_ns, target)
    print(f"  normal VM ({normal.address.split('/')[0]}, host 1) pings the forwarder VM "
          f"({target}) every {PING_INTERVAL * 1000:.0f} ms from now on")
    moved_at = time.time()
    try:
        # The pauses (0.3 s, 0.2 s, 0.5 s) give the ping replies on either
        # side of each step, so a step that cut it off would show.
        time.sleep(0.3)
        # Nova's order: pre_live_migration plugs the destination VIF (its VF
        # is the destination's pci_slot) while the source is still plugged.
        vf = destination.attach(fwd.port, instance.uuid, fwd.vif.network.mtu)
        dst_ns, dst_if = other.vf_namespace(vf), other.vf_netdev(vf)
        print(f"  destination plug (pre_live_migration): VF {vf} on host 2, relay "
              f"{other.relays()[0].get('vhost_path', '') if other.relays() else '(none)'}")
        _stage_guest(dst_ns, dst_if, mac, fwd.address)
        sock = _packet_socket(dst_ns)
        try:
            time.sleep(0.2)
            # The switchover: the guest stops on the source and runs on the
            # destination (its NIC, MAC and address move), which announces it.
            moved_at = time.time()
            rtnl.netns_socket(src_ns).set_link(ifname=src_if, up=False)
            rtnl.netns_socket(dst_ns).set_link(ifname=dst_if, up=True)
            _announce(sock, dst_if, mac)
        finally:
            sock.close()
            rtnl.close_all()  # kept sockets would keep the VF namespaces alive
        print(f"  guest moved: {target} ({mac}) left {src_ns} for {dst_ns}, "
              "announced by RARP")
        # post_live_migration: the source VIF is unplugged.
        os_vif.unplug(fwd.vif, instance)
        print(f"  source unplug (post_live_migration): VF {fwd.vf.address} on host 1")
        time.sleep(0.5)
    finally:
        result = _stop_ping(ping, moved_at)
    print(f"  migration downtime: lost {result.lost} of {result.sent} pings "
          f"({PING_INTERVAL * 1000:.0f} ms apart), no reply for {result.gap * 1000:.0f} ms "
          "across the move")
    _check(result.before_move > 0 and result.after_move > 0,
           "the forwarder VM answered on host 1 before the move and from host 2 after it")
    _check_restored(host, fwd.vf.address, fwd.before, " (host 1, the source)")
    _check(not plugin.host.ovsdb.find_ports_by_iface_id(fwd.port["id"]),
           "the port's OVS port left host 1")
    answer = _netns_run(normal.vm_ns, "ping", "-c", "3", "-i", "0.2", "-W", "2", target)
    _check(answer.returncode == 0, f"normal VM (host 1) -> forwarder VM (host 2, {target}): "
           + (answer.stdout.strip().splitlines()[-2] if answer.stdout.strip() else "no reply"))
    _unjoin(host, other, plugin.host.ovsdb)
    return destination
