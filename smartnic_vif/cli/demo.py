"""``smartnic-vif demo``: the main job, end to end on a simulated SmartNIC host.

Creates a simulated host (2 PFs x 8 VFs, private OVS, virtio-forwarder
simulator), attaches one port in each mode through the os-vif plugin, shows
packets passing between the VMs' stand-ins through OVS, shows OVS ports, relays
and libvirt XML, restarts the virtio-forwarder and then reboots the host and
repairs the ports after each as ``reconcile`` does (packets pass again),
detaches everything, proves nothing is left, destroys the host
and proves that nothing is left of it either.
"""

from __future__ import annotations

import argparse
import json
import subprocess
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
    host = SimulatedHost.create(base, pfs=2, vfs_per_pf=8)
    progress.done()
    print(f"  processes: {host.processes()}")
    extra_links: list[str] = []
    ok = False
    try:
        ok = _run(host, extra_links)
    finally:
        # The normal port's tap and "VM" namespace are the demo's, not the sim's.
        for name in extra_links:
            subprocess.run([IP, "link", "del", name], capture_output=True)  # noqa: S603
        subprocess.run([IP, "netns", "del", _normal_vm_ns(host)], capture_output=True)  # noqa: S603
        if not args.keep:
            _say("destroying the simulated host")
            layout = host.layout
            host.destroy()
            leftovers = SimulatedHost(layout)
            _check(not leftovers.processes(), "no OVS or forwarder process left")
            _check(not leftovers.existing_links(), "no representor or uplink veth left")
            _check(not leftovers.existing_namespaces(), "no network namespace left")
    print(f"\ndemo {'passed' if ok else 'FAILED'} in {time.monotonic() - started:.1f}s")
    return EXIT_OK if ok else EXIT_FAILED


def _run(host: Any, extra_links: list[str]) -> bool:
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
            extra_links.append(vif.vif_name)
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

    _say("detaching everything")
    for _port, vif, vf, before, _ns, _address in reversed(attached):
        os_vif.unplug(vif, instance)
        if vf is not None:
            after = host.kernel_state(vf.address)
            _check({k: after[k] for k in ("mac", "vlan", "trust", "spoofchk")}
                   == {k: before[k] for k in ("mac", "vlan", "trust", "spoofchk")},
                   f"VF {vf.address} settings restored (MAC {after['mac']})")
    _check(not any(ovsdb.find_ports_by_iface_id(one.port["id"]) for one in attached),
           "no OVS port left for the demo's ports")
    _check(plugin.host.forwarder.relays_in_use() == [], "no virtio-forwarder relay left")
    _check(plugin.store.all() == [], "no claim left in the state store")
    now = discover(group.sysfs_root)
    _check([r["representor"] for r in inventory_rows(now, {})] == [r["representor"] for r in rows]
           and [r["driver"] for r in inventory_rows(now, {})] == [r["driver"] for r in rows],
           "every representor has its name back and every VF its driver")
    privileged.stop()
    return True
