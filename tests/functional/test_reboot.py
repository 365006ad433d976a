"""A host reboot on the simulated SmartNIC host, and bringing every port back.

``smartnic-vif sim reboot`` does to the simulated host what a reboot does to a
real one: VFs back to their defaults and the PF's driver, representors back to
their kernel names (down, default MTU, not promiscuous), VF netdevs made anew,
forwarder relays gone, OVS restarted from its database. The claims survive.

Then Nova's own path brings the ports back: nova-compute's ``init_host``
plugs every VIF again through ``os_vif.plug``, with the VIFs Nova itself
builds (``vif_builder.build_vif(upstream=True)``: plugin ``ovs`` for normal
ports, ``agilio_ovs`` for the others). ``smartnic-vif reconcile`` is the other
path; see :func:`test_reboot_then_reconcile_brings_every_port_back`.

A guest does not survive the reboot: each test plays the VMs' part, making a
normal port's tap again and configuring the VMs' NICs (the VF netdevs stand
in for the VMs' NICs) once the ports are plugged, then pings between them
through OVS as the demo does.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import os_vif
import pytest
from pyroute2 import NetNS

from smartnic_vif.decisions import vif_builder
from smartnic_vif.host import kernel
from smartnic_vif.host.discovery import discover
from smartnic_vif.host.rtnl import IFF_UP
from smartnic_vif.model.inventory import VirtualFunction
from smartnic_vif.sim.host import SimulatedHost, SimulatorError
from tests.fixtures.plugin import PluginEnv
from tests.fixtures.probes import link, wait_for

pytestmark = pytest.mark.root

CLI = os.path.join(os.path.dirname(sys.executable), "smartnic-vif")
IP = shutil.which("ip") or "/usr/sbin/ip"
PING = shutil.which("ping") or "/usr/bin/ping"
MODES = ("normal", "passthrough", "forwarder")
VNIC = {"normal": "normal", "passthrough": "direct", "forwarder": "virtio-forwarder"}
NET_MTU = 1450
SUBNET = "10.78.0.{}"
DEFAULT_VF = {"mac": "00:00:00:00:00:00", "vlan": 0, "qos": 0, "trust": False,
              "spoofchk": True, "link_state": "auto"}
_MAC_PREFIX = secrets.randbelow(256)


def explain(proc: subprocess.CompletedProcess[str]) -> str:
    return (f"argv {proc.args}\nexit {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")


def cli(sim: SimulatedHost, *args: str, config: bool = True) -> subprocess.CompletedProcess[str]:
    argv = [CLI, *(["--config-file", sim.config_file] if config else []), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)  # noqa: S603


@dataclass
class Port:
    """One port and the VM that uses it."""

    mode: str
    n: int  # the VM's address is SUBNET.format(n)
    port_id: str
    mac: str
    vf: VirtualFunction | None
    vif: Any = None  # the VIF Nova builds (os_vif.plug tests)

    @property
    def tap(self) -> str:
        return vif_builder.devname_for_port(self.port_id)

    @property
    def ip(self) -> str:
        return SUBNET.format(self.n)

    def neutron_port(self, sim: SimulatedHost) -> dict[str, Any]:
        details: dict[str, Any] = {"bridge_name": "br-int", "datapath_type": "netdev",
                                   "port_filter": False, "ovs_hybrid_plug": False}
        if self.mode == "forwarder":
            details.update(vhostuser_socket=self.vhost_path(sim), vhostuser_mode="server",
                           vhostuser_ovs_plug=True)
        return {
            "id": self.port_id, "mac_address": self.mac,
            "network_id": "5d8a1f57-3c3e-4a51-9b2a-6f7e8d9c0b1a",
            "binding:vnic_type": VNIC[self.mode],
            "binding:vif_type": "ovs" if self.mode == "normal" else "agilio_ovs",
            "binding:vif_details": details,
            "binding:profile": {"capabilities": ["switchdev"]} if self.mode == "passthrough"
            else {},
            "status": "ACTIVE",
        }

    def vhost_path(self, sim: SimulatedHost) -> str:
        return os.path.join(sim.layout.vhost_dir, ("vhu" + self.port_id)[:14])


class VMs:
    """The VMs' side of the ports: a normal port's tap (a veth whose far end
    is the VM's eth0 in a namespace of its own, as the demo makes it) and the
    VMs' addresses. Made again after a reboot, as the guests boot again."""

    def __init__(self, sim: SimulatedHost) -> None:
        self.sim = sim
        self.normal_ns = f"sn{sim.layout.sim_id}-vm-reboot"
        self.taps: list[str] = []

    def ns_and_ifname(self, port: Port) -> tuple[str, str]:
        if port.vf is None:
            return self.normal_ns, "eth0"
        return self.sim.vf_namespace(port.vf.address), self.sim.vf_netdev(port.vf.address)

    def make_tap(self, port: Port) -> None:
        """What libvirt does for a normal port when the domain starts."""
        subprocess.run([IP, "netns", "add", self.normal_ns], capture_output=True)  # noqa: S603
        subprocess.run([IP, "link", "add", port.tap, "type", "veth", "peer", "name",  # noqa: S603
                        "eth0", "netns", self.normal_ns, "address", port.mac], check=True)
        subprocess.run([IP, "link", "set", port.tap, "up"], check=True)  # noqa: S603
        self.taps.append(port.tap)

    def lose_tap(self, port: Port) -> None:
        """The guest and its tap go as the host goes down (before OVS starts
        again: ovs-vswitchd's userspace datapath does not open again a device
        that vanished and came back under the same name while it ran)."""
        subprocess.run([IP, "link", "del", port.tap], capture_output=True)  # noqa: S603

    def boot(self, ports: list[Port]) -> None:
        """Each guest configures its NIC."""
        for port in ports:
            ns, ifname = self.ns_and_ifname(port)
            with NetNS(ns) as n:
                idx = n.link_lookup(ifname=ifname)[0]
                have = [a.get_attr("IFA_ADDRESS") for a in n.get_addr(index=idx, family=2)]
                if port.ip not in have:
                    n.addr("add", index=idx, address=port.ip, prefixlen=24)
                n.link("set", index=idx, state="up")

    def ping(self, src: Port, dst: Port) -> bool:
        """True once ``src``'s VM reaches ``dst``'s (OVS may still be adding
        a port that just appeared)."""
        ns, _ = self.ns_and_ifname(src)

        def one() -> bool:
            proc = subprocess.run(  # noqa: S603 - fixed argv
                [IP, "netns", "exec", ns, PING, "-c", "1", "-W", "1", dst.ip],
                capture_output=True, timeout=10)
            return proc.returncode == 0

        return wait_for(one, timeout=20)

    def assert_pinging(self, ports: list[Port]) -> None:
        src = next(p for p in ports if p.mode == "passthrough")
        for dst in ports:
            if dst is not src:
                assert self.ping(src, dst), f"{src.mode} VM cannot reach {dst.mode} VM {dst.ip}"

    def cleanup(self) -> None:
        for tap in self.taps:
            subprocess.run([IP, "link", "del", tap], capture_output=True)  # noqa: S603
        subprocess.run([IP, "netns", "del", self.normal_ns], capture_output=True)  # noqa: S603


def new_ports(env: PluginEnv, pf: int, first_vf: int) -> list[Port]:
    """One port per mode; the VFs are the ``first_vf``-th and next of PF ``pf``."""
    ports = []
    for n, mode in enumerate(MODES, start=1):
        vf = None if mode == "normal" else env.vf(pf, first_vf + n - 2)
        port_id = str(uuid.uuid4())
        ports.append(Port(mode, n, port_id, f"fa:16:3e:{_MAC_PREFIX:02x}:{pf:02x}:{n:02x}", vf))
    return ports


INSTANCE = vif_builder.instance_info("3b2f6a1e-5c4d-4e7f-8a9b-0c1d2e3f4a5b", "reboot-vm")


def nova_vifs(env: PluginEnv, ports: list[Port]) -> None:
    """The VIFs Nova builds for the ports (and hands to os_vif.plug in init_host)."""
    network = {"id": "5d8a1f57-3c3e-4a51-9b2a-6f7e8d9c0b1a", "mtu": NET_MTU}
    for port in ports:
        port.vif = vif_builder.build_vif(port.neutron_port(env.sim), network=network,
                                         vf=port.vf, upstream=True)


@contextlib.contextmanager
def plugged_through_os_vif(env: PluginEnv, ports: list[Port]) -> Iterator[VMs]:
    """Plug the ports as Nova does, boot the VMs; unplug and clean up afterwards."""
    vms = VMs(env.sim)
    nova_vifs(env, ports)
    plugged: list[Port] = []
    try:
        for port in ports:
            if port.mode == "normal":
                vms.make_tap(port)
            os_vif.plug(port.vif, INSTANCE)
            plugged.append(port)
        vms.boot(ports)
        yield vms
    finally:
        for port in reversed(plugged):
            os_vif.unplug(port.vif, INSTANCE)
        vms.cleanup()


def assert_plugged(env: PluginEnv, port: Port) -> None:
    """What a plugged port shows on the host: its OVS interface (found by
    ovs-vswitchd: an ofport), the VF's MAC and driver, the relay, the
    representor's name, MTU and flags."""
    name = port.tap  # Nova names the representor after the port, as it names a tap
    assert wait_for(lambda: [p.name for p in env.ovs.find_ports_by_iface_id(port.port_id)]
                    == [name]), env.ovs.find_ports_by_iface_id(port.port_id)
    assert wait_for(lambda: (env.ovs.get_port(name).ofport or -1) > 0), (  # type: ignore[union-attr]
        env.ovs.get_port(name))
    ids = env.ovs.get_port(name).external_ids  # type: ignore[union-attr]
    assert (ids["iface-id"], ids["attached-mac"]) == (port.port_id, port.mac)
    if port.vf is None:
        return
    assert port.vf.representor is not None
    assert link(name) == (NET_MTU, True, True)
    assert link(port.vf.representor.name) is None
    assert env.vf_settings(port.vf.address)["mac"] == port.mac
    pair = (port.vf.address, port.vhost_path(env.sim))
    if port.mode == "forwarder":
        assert env.vf_driver(port.vf.address) == "vfio-pci"
        assert pair in env.relay_pairs()
    else:
        assert env.vf_driver(port.vf.address) == "nfp"
        assert port.vf.address not in [d for d, _ in env.relay_pairs()]


def assert_rebooted(env: PluginEnv, before: dict[str, int], ports: list[Port]) -> None:
    """What a reboot must leave: the host as at create, but OVSDB and the claims."""
    sim = env.sim
    processes = sim.processes()
    assert set(processes) == set(before)
    assert all(processes[name] != pid for name, pid in before.items()), (before, processes)
    for vf in env.all_vfs():
        state = sim.kernel_state(vf.address)
        assert env.vf_settings(vf.address) == DEFAULT_VF, vf.address
        assert env.vf_driver(vf.address) == "nfp", vf.address
        assert os.path.exists(os.path.join(sim.dir, "sys", "class", "net", state["netdev"]))
        # The VF's netdev was made anew: down, no address, its own MAC.
        with NetNS(state["netns"]) as ns:
            (msg,) = ns.get_links(ns.link_lookup(ifname=state["netdev"])[0])
            assert not msg["flags"] & IFF_UP
            assert msg.get_attr("IFLA_ADDRESS") == state["netdev_mac"]
            assert list(ns.get_addr(index=msg["index"], family=2)) == []
        # Back to its kernel name, down, default MTU, not promiscuous.
        assert vf.representor is not None
        assert link(vf.representor.name) == (1500, False, False), vf.representor.name
    # sysfs names them so too (the simulated tree followed the plugs' renames).
    found = discover(sim.dir)
    assert {vf.address: vf.representor.name for vf in found.vfs() if vf.representor} == {
        vf.address: vf.representor.name for vf in env.all_vfs() if vf.representor}
    assert env.relay_pairs() == []
    ovs_ports = env.ovs.list_ports("br-int")
    for port in ports:
        # Still in OVSDB, with its external_ids.
        assert port.tap in ovs_ports
        assert wait_for(lambda port=port: env.ovs.get_port(port.tap) is not None)
        assert env.ovs.get_port(port.tap).external_ids["iface-id"] == port.port_id  # type: ignore[union-attr]
        if port.vf is not None:
            # The representor no longer has the port's name: ovs-vswitchd
            # cannot open the interface until something renames it.
            assert link(port.tap) is None
            assert (env.ovs.get_port(port.tap).ofport or -1) <= 0  # type: ignore[union-attr]
    assert sorted(r.port_id for r in env.store().all()) == sorted(
        p.port_id for p in ports if p.vf is not None)


# -- sim reboot -------------------------------------------------------------------


def test_sim_reboot_resets_the_host_but_keeps_ovsdb_and_the_claims(plugin_env: PluginEnv) -> None:
    env = plugin_env
    ports = new_ports(env, 0, 0)
    with plugged_through_os_vif(env, ports) as vms:
        for port in ports:
            assert_plugged(env, port)
        vms.assert_pinging(ports)
        before = env.sim.processes()

        vms.lose_tap(ports[0])
        proc = cli(env.sim, "sim", "reboot", "--dir", env.sim.dir, config=False)

        assert proc.returncode == 0, explain(proc)
        assert proc.stdout.strip() == f"simulated host in {env.sim.dir} rebooted", explain(proc)
        assert_rebooted(env, before, ports)
        env.reset_plugins()  # nova-compute starts again too
    # ...and unplugging after the reboot (without plugging again) is clean.
    assert env.relay_pairs() == []
    assert env.store().all() == []
    for port in ports:
        assert port.tap not in env.ovs.list_ports("br-int")
        if port.vf is not None:
            assert env.vf_settings(port.vf.address) == DEFAULT_VF
            assert env.vf_driver(port.vf.address) == "nfp"


def test_sim_reboot_of_a_directory_without_a_host_is_a_usage_error(tmp_path: Any) -> None:
    proc = subprocess.run([CLI, "sim", "reboot", "--dir", str(tmp_path)],  # noqa: S603
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, explain(proc)
    assert f"no simulated host in {tmp_path}" in proc.stderr, explain(proc)


def test_sim_reboot_of_a_host_missing_a_namespace_changes_nothing(
    sim_host: Callable[..., SimulatedHost],
) -> None:
    host = sim_host(pfs=1, vfs_per_pf=2)
    vf = "0000:05:08.1"
    with kernel.SimulatedKernel(host.dir).state(vf) as state:
        state["mac"] = "fa:16:3e:00:00:01"
    ns = host.vf_namespace("0000:05:08.0")
    subprocess.run([IP, "netns", "del", ns], check=True)  # noqa: S603

    with pytest.raises(SimulatorError) as excinfo:
        host.reboot()

    assert str(excinfo.value) == (
        f"cannot reboot the simulated host in {host.dir}: namespace {ns} is missing "
        "(destroy the host and create it again)")
    assert host.kernel_state(vf)["mac"] == "fa:16:3e:00:00:01"


# -- Nova's path: init_host plugs every VIF again -----------------------------------


def test_reboot_then_os_vif_plug_of_the_same_vifs_brings_every_port_back(
    plugin_env: PluginEnv,
) -> None:
    env = plugin_env
    ports = new_ports(env, 1, 4)
    with plugged_through_os_vif(env, ports) as vms:
        vms.assert_pinging(ports)

        vms.lose_tap(ports[0])
        env.sim.reboot()
        env.reset_plugins()  # a new nova-compute process
        # init_host: every VIF of every instance on the host, through os-vif.
        for port in ports:
            os_vif.plug(port.vif, INSTANCE)
        # The guests start again: libvirt makes the normal port's tap.
        vms.make_tap(ports[0])
        vms.boot(ports)

        for port in ports:
            assert_plugged(env, port)
        vms.assert_pinging(ports)
        records = {r.port_id: r.phase for r in env.store().all()}
        assert records == {p.port_id: "plugged" for p in ports if p.vf is not None}


# -- reconcile: needs helper F's repair of plugged ports (issue 16, item 3) -----------


def test_reboot_then_reconcile_brings_every_port_back(plugin_env: PluginEnv) -> None:
    """``reconcile`` after ``sim reboot``, for ports attached with the CLI in
    all three modes; then ``status`` finds no drift and the VMs ping.

    Depends on reconcile repairing plugged ports (``SmartNICPlugin.repair``):
    until that is merged, reconcile answers "nothing to reconcile" and status
    reports the drift."""
    env = plugin_env
    sim = env.sim
    ports = new_ports(env, 0, 8)
    vms = VMs(sim)
    attached: list[Port] = []
    instance = str(uuid.uuid4())
    try:
        for port in ports:
            if port.mode == "normal":
                vms.make_tap(port)
            proc = cli(sim, "attach", "--port-id", port.port_id, "--mac", port.mac,
                       "--vnic-type", VNIC[port.mode], "--instance-uuid", instance,
                       "--mtu", str(NET_MTU), "--json")
            assert proc.returncode == 0, explain(proc)
            attached.append(port)
            port.vf = (env.inventory.vf(json.loads(proc.stdout)["vf"])
                       if port.mode != "normal" else None)
        vms.boot(ports)
        vms.assert_pinging(ports)

        vms.lose_tap(ports[0])
        proc = cli(sim, "sim", "reboot", "--dir", sim.dir, config=False)
        assert proc.returncode == 0, explain(proc)

        proc = cli(sim, "reconcile", "--json")
        assert proc.returncode == 0, explain(proc)
        vms.make_tap(ports[0])
        vms.boot(ports)

        status = cli(sim, "status", "--json")
        assert status.returncode == 0, explain(status)
        assert not json.loads(status.stdout)["drift"]
        env.reset_plugins()
        for port in ports:
            assert_plugged(env, port)
        vms.assert_pinging(ports)
    finally:
        for port in reversed(attached):
            cli(sim, "detach", "--port-id", port.port_id)
        vms.cleanup()
    assert env.store().all() == []
    assert env.relay_pairs() == []
    for port in ports:
        if port.vf is not None:
            assert kernel.current_driver(sim.dir, port.vf.address) == "nfp"
