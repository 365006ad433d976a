"""The os-vif plugin driven by os-vif itself on the simulated SmartNIC host.

Everything goes through ``os_vif.plug``/``os_vif.unplug`` with the plugins
os-vif loaded from the entry points, against the simulated host's real private
OVS, its veth representors, its simulated kernel (VF settings, driver binding)
and its virtio-forwarder simulator process. Each test compares the host with a
snapshot taken before it plugged anything: plug/unplug, failed plugs included,
must leave the host exactly as they found it.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import secrets
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import os_vif
import pytest
from os_vif import exception as osv_exception
from os_vif import objects as osv
from oslo_versionedobjects import base as ovo_base
from pyroute2 import IPRoute

from smartnic_vif.host import privileged
from smartnic_vif.host.forwarder.client import ForwarderClient
from smartnic_vif.host.kernel import SimulatedKernel
from smartnic_vif.model.inventory import VirtualFunction
from smartnic_vif.osvif.objects import VIFPortProfileForwarder, VIFPortProfilePassthrough
from smartnic_vif.sim.forwarder import ForwarderSimulator
from smartnic_vif.sim.host import stop_pid
from smartnic_vif.sim.ovs import PrivateOVS
from tests.fixtures.plugin import PluginEnv, loaded_plugin, new_port_id, short_tmpdir
from tests.fixtures.probes import link, wait_for

pytestmark = pytest.mark.root
osv.register_all()

NET_MTU = 1450
_MAC_PREFIX = secrets.randbelow(256)
_macs = itertools.count(1)
INSTANCE = osv.instance_info.InstanceInfo(uuid="6f4c1a52-8a43-4bb5-9f4e-3d2b1c0a9e77", name="vm1")


def new_mac() -> str:
    n = next(_macs)
    return f"fa:16:3e:{_MAC_PREFIX:02x}:{n >> 8 & 0xFF:02x}:{n & 0xFF:02x}"


def devname(port_id: str) -> str:
    return ("tap" + port_id)[:14]


def network(bridge: str = "br-int", mtu: int = NET_MTU) -> Any:
    return osv.network.Network(id="0e6c3f43-7b0b-4b1e-a2b2-1c7f1c2d9a10", bridge=bridge, mtu=mtu)


def passthrough_vif(
    vf: VirtualFunction,
    port_id: str | None = None,
    *,
    rename: bool = True,
    trusted: bool = False,
    spoofchk: bool = True,
) -> Any:
    port_id = port_id or new_port_id()
    profile = VIFPortProfilePassthrough(
        interface_id=port_id, representor_address=vf.address, trusted=trusted, spoofchk=spoofchk
    )
    if rename:
        profile.representor_name = devname(port_id)
    return osv.vif.VIFHostDevice(
        id=port_id, address=new_mac(), network=network(), plugin="smartnic",
        vif_name=devname(port_id), dev_type="ethernet", dev_address=vf.address,
        port_profile=profile,
    )


def forwarder_vif(
    env: PluginEnv, vf: VirtualFunction, port_id: str | None = None, *, rename: bool = True
) -> Any:
    port_id = port_id or new_port_id()
    profile = VIFPortProfileForwarder(interface_id=port_id, representor_address=vf.address)
    if rename:
        profile.representor_name = devname(port_id)
    return osv.vif.VIFVHostUser(
        id=port_id, address=new_mac(), network=network(), plugin="smartnic",
        vif_name=devname(port_id), mode="server",
        path=os.path.join(env.sim.layout.vhost_dir, ("vhu" + port_id)[:14]),
        port_profile=profile,
    )


def make_vif(env: PluginEnv, mode: str, vf: VirtualFunction, **kwargs: Any) -> Any:
    if mode == "passthrough":
        return passthrough_vif(vf, **kwargs)
    return forwarder_vif(env, vf, **kwargs)


def port_name(vif: Any, vf: VirtualFunction) -> str:
    name = vif.port_profile.representor_name if "representor_name" in vif.port_profile else None
    assert vf.representor is not None
    return name or vf.representor.name


def assert_plugged(env: PluginEnv, vif: Any, vf: VirtualFunction, mode: str) -> None:
    """Everything a plugged passthrough/forwarder port must show on the host."""
    assert vf.representor is not None
    name = port_name(vif, vf)
    ports = env.ovs.find_ports_by_iface_id(vif.port_profile.interface_id)
    assert [p.name for p in ports] == [name]
    port = ports[0]
    assert port.bridge == "br-int"
    assert port.external_ids == {
        "iface-id": vif.port_profile.interface_id,
        "iface-status": "active",
        "attached-mac": vif.address,
        "vm-uuid": INSTANCE.uuid,
    }
    assert port.mtu_request == NET_MTU
    # ovs-vswitchd really opened the (renamed) representor.
    assert wait_for(lambda: (env.ovs.get_port(name).ofport or -1) > 0)  # type: ignore[union-attr]
    assert env.ovs.get_port(name).error is None  # type: ignore[union-attr]
    # The representor carries the wished name, the network's MTU, is up and
    # promiscuous.
    assert link(name) == (NET_MTU, True, True)
    if name != vf.representor.name:
        assert link(vf.representor.name) is None
    settings = env.vf_settings(vf.address)
    assert settings["mac"] == vif.address
    assert settings["vlan"] == 0
    if mode == "forwarder":
        assert env.vf_driver(vf.address) == "vfio-pci"
        assert (vf.address, vif.path) in env.relay_pairs()
    else:
        assert env.vf_driver(vf.address) == "nfp"
        assert vf.address not in [d for d, _ in env.relay_pairs()]
    record = env.store().get(vif.port_profile.interface_id)
    assert record is not None and record.phase == "plugged" and record.vf_address == vf.address


def assert_plug_fails(vif: Any, *fragments: str) -> str:
    with pytest.raises(osv_exception.PlugException) as excinfo:
        os_vif.plug(vif, INSTANCE)
    message = str(excinfo.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


@pytest.fixture
def env(plugin_env: PluginEnv) -> Iterator[PluginEnv]:
    """The shared host; the test must leave it as it found it."""
    before = plugin_env.snapshot()
    yield plugin_env
    assert plugin_env.snapshot() == before, "the test left the simulated host changed"


@pytest.fixture
def hook_dir() -> Iterator[str]:
    path = short_tmpdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def write_hook(directory: str, body: str) -> str:
    path = os.path.join(directory, "hook.sh")
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body)
    os.chmod(path, stat.S_IRWXU)
    return path


# -- each mode, plug and unplug ------------------------------------------------------


def test_passthrough_plug_sets_everything_and_unplug_restores_the_snapshot(
    env: PluginEnv,
) -> None:
    vf = env.vf(0, 3)
    # Give the VF settings unlike the plug's, so that restoring is visible.
    privileged.set_vf(vf.pf_address, vf.index, {"vlan": 7})
    try:
        before = env.snapshot()
        vif = passthrough_vif(vf, trusted=True, spoofchk=False)

        os_vif.plug(vif, INSTANCE)

        assert_plugged(env, vif, vf, "passthrough")
        settings = env.vf_settings(vf.address)
        assert (settings["trust"], settings["spoofchk"]) == (True, False)
        assert env.relay_pairs() == before["relays"]

        os_vif.unplug(vif, INSTANCE)

        assert env.snapshot() == before
        assert env.vf_settings(vf.address)["vlan"] == 7
        assert env.store().get(vif.port_profile.interface_id) is None
    finally:
        privileged.set_vf(vf.pf_address, vf.index, {"vlan": 0})


def test_forwarder_plug_relays_the_vf_and_unplug_restores_the_snapshot(env: PluginEnv) -> None:
    vf = env.vf(1, 2)
    before = env.snapshot()
    vif = forwarder_vif(env, vf)

    os_vif.plug(vif, INSTANCE)

    assert_plugged(env, vif, vf, "forwarder")
    assert env.relay_pairs() == sorted([*before["relays"], (vf.address, vif.path)])

    os_vif.unplug(vif, INSTANCE)

    assert env.snapshot() == before
    assert env.vf_driver(vf.address) == "nfp"


def cli(env: PluginEnv, *args: str) -> subprocess.CompletedProcess[str]:
    """``smartnic-vif`` against the module's simulated host."""
    return subprocess.run(  # noqa: S603 - fixed argv, no shell
        [os.path.join(os.path.dirname(sys.executable), "smartnic-vif"),
         "--config-file", env.sim.config_file, *args],
        capture_output=True, text=True, timeout=60)


def test_status_of_a_forwarder_port_os_vif_plugged_shows_no_drift(env: PluginEnv) -> None:
    # Nova plugs through os-vif: the claim records the plugin's request (its
    # vhost_path), not a CLI VIF; status must find the relay by that path.
    vf = env.vf(1, 5)
    vif = forwarder_vif(env, vf)
    os_vif.plug(vif, INSTANCE)
    try:
        proc = cli(env, "status", "--json")
        [port] = [p for p in json.loads(proc.stdout)["ports"] if p["port_id"] == vif.id]
        assert port["drift"] == [] and port["relay"] == vf.address, proc.stdout
        assert proc.returncode == 0, proc.stdout + proc.stderr
    finally:
        os_vif.unplug(vif, INSTANCE)


@pytest.mark.parametrize("mode", ["passthrough", "forwarder"])
def test_the_cli_on_a_port_os_vif_plugged(env: PluginEnv, mode: str) -> None:
    # attach of a port Nova plugged is refused in one line (the CLI has no
    # arguments of its to compare); detach unplugs it by the plugin's journal.
    vf = env.vf(1, 6)
    before = env.snapshot()
    vif = make_vif(env, mode, vf)
    os_vif.plug(vif, INSTANCE)
    try:
        vnic = "direct" if mode == "passthrough" else "virtio-forwarder"
        proc = cli(env, "attach", "--port-id", vif.id, "--mac", str(vif.address),
                   "--vnic-type", vnic, "--instance-uuid", str(INSTANCE.uuid))
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert proc.stderr.count("\n") == 1 and "os-vif" in proc.stderr, proc.stderr
        assert_plugged(env, vif, vf, mode)
        proc = cli(env, "detach", "--port-id", vif.id, "--json")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert json.loads(proc.stdout)["status"] == "detached"
        assert env.store().get(vif.id) is None
    finally:
        os_vif.unplug(vif, INSTANCE)
    assert env.snapshot() == before


def test_a_vhost_path_os_vif_hands_over_is_checked_before_anything_changes(
    env: PluginEnv,
) -> None:
    vf = env.vf(1, 3)
    vhost_dir = env.sim.layout.vhost_dir
    regular = os.path.join(vhost_dir, "not-a-socket")
    escape = os.path.join(vhost_dir, "out")
    with open(regular, "w") as f:
        f.write("keep me")
    os.symlink("/etc", escape)
    try:
        for path, reason in (
            ("/etc/passwd", "not inside"),
            (f"{vhost_dir}/../../../etc/x", "normalised"),
            ("/tmp", "not inside"),
            ("/", "normalised"),
            (f"{vhost_dir}/vhu\nx", "control characters"),
            (f"{vhost_dir}/vhu\0x", "control characters"),
            (f"{vhost_dir}/" + "v" * 107, "107 bytes"),
            (regular, "not a socket"),
            (f"{escape}/vhu1", "outside"),
        ):
            vif = forwarder_vif(env, vf)
            vif.path = path
            assert_plug_fails(vif, "vif.path", reason)
            assert_released(env, vif)
        # With the directory check off a path may be anywhere; an existing
        # file that is not a socket is still refused.
        env.override("vhostuser_socket_dir_check", False)
        vif = forwarder_vif(env, vf)
        vif.path = "/etc/passwd"
        assert_plug_fails(vif, "vif.path", "not a socket")
        assert_released(env, vif)
        with open(regular) as f:
            assert f.read() == "keep me"
    finally:
        env.clear_overrides()
        os.unlink(regular)
        os.unlink(escape)


def test_a_port_plugged_before_the_socket_directories_changed_can_be_unplugged(
    env: PluginEnv,
) -> None:
    """The directory check guards plugs; it never blocks a clean-up."""
    vf = env.vf(1, 4)
    before = env.snapshot()
    vif = forwarder_vif(env, vf)
    os_vif.plug(vif, INSTANCE)
    try:
        env.override("vhostuser_socket_dir", "/var/lib/elsewhere")
        os_vif.unplug(vif, INSTANCE)
    finally:
        env.clear_overrides()
    assert env.snapshot() == before


@pytest.mark.parametrize("mode", ["passthrough", "forwarder"])
def test_representor_keeps_its_name_when_none_is_wished(env: PluginEnv, mode: str) -> None:
    vf = env.vf(0, 4)
    assert vf.representor is not None
    before = env.snapshot()
    vif = make_vif(env, mode, vf, rename=False)

    os_vif.plug(vif, INSTANCE)

    assert_plugged(env, vif, vf, mode)
    assert port_name(vif, vf) == vf.representor.name
    os_vif.unplug(vif, INSTANCE)
    assert env.snapshot() == before


@pytest.mark.parametrize("mode", ["passthrough", "forwarder"])
def test_a_promiscuous_representor_stays_promiscuous_after_unplug(
    env: PluginEnv, mode: str
) -> None:
    # An operator's own setting: plug finds the flag set and unplug keeps it.
    vf = env.vf(1, 6)
    assert vf.representor is not None
    rep = vf.representor.name
    privileged.set_link(rep, promisc=True)
    try:
        before = env.snapshot()
        vif = make_vif(env, mode, vf)
        os_vif.plug(vif, INSTANCE)
        assert_plugged(env, vif, vf, mode)
        os_vif.unplug(vif, INSTANCE)
        assert env.snapshot() == before
        assert link(rep) == (1500, False, True)
    finally:
        privileged.set_link(rep, promisc=False)


class LateFlagWrite:
    """A pending OVS write that, once waited for, takes the representor down
    as ovs-vswitchd's userspace datapath does when it writes the flags it
    cached before the plug brought the link up."""

    def __init__(self, pending: Any, ifname: str) -> None:
        self.pending, self.ifname = pending, ifname
        self.done, self.deadline = pending.done, pending.deadline

    def wait(self) -> None:
        self.pending.wait()
        privileged.set_link(self.ifname, up=False, promisc=True)


def test_a_representor_ovs_took_down_is_brought_up_again(
    env: PluginEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    vf = env.vf(0, 5)
    before = env.snapshot()
    vif = passthrough_vif(vf)
    name = port_name(vif, vf)
    host = loaded_plugin("smartnic").host
    begin = host.begin_ovs_set_port

    def begin_then_take_down(*args: Any, **kwargs: Any) -> LateFlagWrite:
        return LateFlagWrite(begin(*args, **kwargs), name)

    monkeypatch.setattr(host, "begin_ovs_set_port", begin_then_take_down)
    try:
        os_vif.plug(vif, INSTANCE)
        assert_plugged(env, vif, vf, "passthrough")  # up, though OVS took it down
    finally:
        monkeypatch.undo()
        os_vif.unplug(vif, INSTANCE)
    assert env.snapshot() == before


def test_plug_creates_a_missing_bridge_with_the_configured_datapath_type(
    env: PluginEnv,
) -> None:
    bridge = "br-snv-new"
    assert env.ovs.bridge_datapath_type(bridge) is None
    vf = env.vf(0, 5)
    vif = passthrough_vif(vf)
    vif.network.bridge = bridge
    try:
        os_vif.plug(vif, INSTANCE)

        # The simulated host's config sets default_datapath_type = netdev.
        assert env.ovs.bridge_datapath_type(bridge) == "netdev"
        (port,) = env.ovs.find_ports_by_iface_id(vif.port_profile.interface_id)
        assert (port.name, port.bridge) == (devname(vif.id), bridge)

        os_vif.unplug(vif, INSTANCE)

        assert env.ovs.list_ports(bridge) == []
    finally:
        env.ovs.delete_bridge(bridge)


# -- normal ports: os-vif's stock ovs plugin does the work ---------------------------


@pytest.fixture
def tap() -> Iterator[str]:
    """A tap-like device for a normal port (a veth; the peer is never used)."""
    name = devname(new_port_id())
    with IPRoute() as ipr:
        ipr.link("add", ifname=name, kind="veth", peer=name[:-1] + "p")
    yield name
    with IPRoute() as ipr:
        if ipr.link_lookup(ifname=name):
            ipr.link("del", ifname=name)


def normal_vif(tap_name: str, bridge: str = "br-int", datapath_type: str | None = None) -> Any:
    port_id = new_port_id()
    profile = osv.vif.VIFPortProfileOpenVSwitch(interface_id=port_id, create_port=True)
    if datapath_type is not None:
        profile.datapath_type = datapath_type
    return osv.vif.VIFOpenVSwitch(
        id=port_id, address=new_mac(), network=network(bridge), plugin="smartnic",
        vif_name=tap_name, bridge_name=bridge, port_profile=profile,
    )


def stock_plugin_port(env: PluginEnv, name: str, present: bool = True) -> Any:
    """The port as our OVSDB client sees it once it caught up with the stock
    plugin's writes (made on os-vif's own OVSDB connection, so they reach our
    IDL replica a little later)."""
    assert wait_for(lambda: (env.ovs.get_port(name) is not None) == present), (
        f"port {name} {'never appeared' if present else 'still there'}"
    )
    return env.ovs.get_port(name)


def test_normal_vif_is_plugged_by_the_stock_ovs_plugin(env: PluginEnv, tap: str) -> None:
    # Nova's VIFPortProfileOpenVSwitch leaves datapath_type unset when Neutron
    # sends none: the plugin must cope with the unset field.
    vif = normal_vif(tap)

    os_vif.plug(vif, INSTANCE)
    try:
        port = stock_plugin_port(env, tap)
        assert port.bridge == "br-int"
        assert port.external_ids == {
            "iface-id": vif.port_profile.interface_id,
            "iface-status": "active",
            "attached-mac": vif.address,
            "vm-uuid": INSTANCE.uuid,
        }
        assert link(tap) is not None and link(tap)[0] == NET_MTU  # type: ignore[index]
        # No claim: a normal port has no VF.
        assert env.store().get(vif.port_profile.interface_id) is None
        # The stock plugin worked through our OVSDB connection (same server):
        # one replica of the database in the process, not two.
        ours = loaded_plugin("smartnic")
        assert ours.ovs_plugin.ovsdb.ovsdb is ours.host.ovsdb.api
        assert ours.ovs_plugin.ovsdb._ovsdb is None  # os-vif never opened its own
    finally:
        os_vif.unplug(vif, INSTANCE)

    stock_plugin_port(env, tap, present=False)


def test_normal_vif_never_flips_an_existing_netdev_bridge(env: PluginEnv, tap: str) -> None:
    bridge = "br-snv-nd"
    env.ovs.ensure_bridge(bridge, "netdev")
    ovs = PrivateOVS(env.sim.layout.ovs_dir)

    def datapath_type() -> str:
        # Asked of ovsdb-server itself, not of a replica that may lag.
        return ovs.vsctl("get", "Bridge", bridge, "datapath_type").strip()

    try:
        # Nova passes Neutron's datapath_type; os-vif's stock plugin would
        # write it onto the existing bridge.
        vif = normal_vif(tap, bridge=bridge, datapath_type="system")

        os_vif.plug(vif, INSTANCE)
        try:
            port = stock_plugin_port(env, tap)
            assert port.bridge == bridge
            assert port.external_ids["iface-id"] == vif.port_profile.interface_id
            assert datapath_type() == "netdev"
            # Pinned on a copy: Nova's VIF object is left as it was.
            assert vif.port_profile.datapath_type == "system"
        finally:
            os_vif.unplug(vif, INSTANCE)

        stock_plugin_port(env, tap, present=False)
        assert datapath_type() == "netdev"
    finally:
        env.ovs.delete_bridge(bridge)


def test_normal_vif_leaves_a_system_bridge_as_it_is(env: PluginEnv, tap: str) -> None:
    # A bridge made without a datapath_type (""), as `ovs-vsctl add-br` makes
    # it, is a kernel-datapath bridge; the sim's default_datapath_type for new
    # bridges is netdev, which must not be written onto it.
    bridge = "br-snv-sys"
    ovs = PrivateOVS(env.sim.layout.ovs_dir)
    ovs.vsctl("add-br", bridge)
    try:
        vif = normal_vif(tap, bridge=bridge, datapath_type="netdev")
        os_vif.plug(vif, INSTANCE)
        try:
            assert stock_plugin_port(env, tap).bridge == bridge
            assert ovs.vsctl("get", "Bridge", bridge, "datapath_type").strip() == '""'
        finally:
            os_vif.unplug(vif, INSTANCE)
        stock_plugin_port(env, tap, present=False)
    finally:
        env.ovs.delete_bridge(bridge)


def test_normal_vif_whose_tap_does_not_exist_yet_is_plugged(env: PluginEnv) -> None:
    # libvirt makes the tap when the domain starts, after Nova's plug: the
    # stock plugin adds the port and sets no MTU then, and so do we.
    tap = devname(new_port_id())
    vif = normal_vif(tap)
    os_vif.plug(vif, INSTANCE)
    try:
        assert stock_plugin_port(env, tap).external_ids["attached-mac"] == vif.address
        assert link(tap) is None
    finally:
        os_vif.unplug(vif, INSTANCE)
    stock_plugin_port(env, tap, present=False)


def test_normal_vif_on_a_missing_bridge_makes_it_with_the_default_datapath(
    env: PluginEnv, tap: str
) -> None:
    bridge = "br-snv-new"
    ovs = PrivateOVS(env.sim.layout.ovs_dir)
    vif = normal_vif(tap, bridge=bridge)
    try:
        os_vif.plug(vif, INSTANCE)
        assert stock_plugin_port(env, tap).bridge == bridge
        # The sim's [os_vif_smartnic] default_datapath_type.
        assert ovs.vsctl("get", "Bridge", bridge, "datapath_type").strip() == "netdev"
        os_vif.unplug(vif, INSTANCE)
        stock_plugin_port(env, tap, present=False)
    finally:
        env.ovs.delete_bridge(bridge)


def test_hybrid_vif_gets_a_linux_bridge_and_a_veth_pair_into_ovs(env: PluginEnv) -> None:
    # VIFBridge (Neutron's ovs_hybrid_plug): the stock plugin makes the Linux
    # bridge qbr<id> and the veth pair qvb<id>/qvo<id>, puts qvb on the
    # Linux bridge and qvo on OVS; the MTU of qvo is set through our helper.
    port_id = new_port_id()
    profile = osv.vif.VIFPortProfileOpenVSwitch(interface_id=port_id)
    vif = osv.vif.VIFBridge(
        id=port_id, address=new_mac(), network=network(), plugin="smartnic",
        vif_name=devname(port_id), bridge_name=("qbr" + port_id)[:14], port_profile=profile,
    )
    qvb, qvo = ("qvb" + port_id)[:14], ("qvo" + port_id)[:14]
    try:
        os_vif.plug(vif, INSTANCE)
        port = stock_plugin_port(env, qvo)
        assert port.bridge == "br-int"
        assert port.external_ids["iface-id"] == port_id
        assert port.external_ids["attached-mac"] == vif.address
        assert link(qvo)[:2] == (NET_MTU, True)  # type: ignore[index]
        assert link(qvb)[:2] == (NET_MTU, True)  # type: ignore[index]
        with IPRoute() as ipr:
            [qbr_index] = ipr.link_lookup(ifname=vif.bridge_name)
            assert ipr.get_links(ifname=qvb)[0].get_attr("IFLA_MASTER") == qbr_index
    finally:
        os_vif.unplug(vif, INSTANCE)
    stock_plugin_port(env, qvo, present=False)
    assert link(qvo) is None and link(qvb) is None and link(vif.bridge_name) is None


def test_normal_plug_commits_one_transaction_to_an_existing_bridge(
    env: PluginEnv, tap: str
) -> None:
    # Each commit that changes the database waits for ovs-vswitchd to
    # reconfigure, and Open_vSwitch's next_cfg counts them: a plug onto an
    # existing bridge changes the port only, in one commit (a bridge whose
    # datapath_type were written would make it two).
    ovs = PrivateOVS(env.sim.layout.ovs_dir)

    def commits() -> int:
        return int(ovs.vsctl("get", "Open_vSwitch", ".", "next_cfg"))

    vif = normal_vif(tap)
    before = commits()
    os_vif.plug(vif, INSTANCE)
    try:
        assert commits() == before + 1
        assert stock_plugin_port(env, tap).external_ids["iface-id"] == vif.port_profile.interface_id
    finally:
        os_vif.unplug(vif, INSTANCE)


# -- idempotency -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["passthrough", "forwarder"])
def test_plugging_twice_changes_nothing_and_unplugging_twice_succeeds(
    env: PluginEnv, mode: str
) -> None:
    vf = env.vf(1, 5)
    before = env.snapshot()
    vif = make_vif(env, mode, vf)

    os_vif.plug(vif, INSTANCE)
    plugged = env.snapshot()
    binds = env.driver_changes(vf.address)

    os_vif.plug(vif, INSTANCE)

    assert env.snapshot() == plugged
    assert env.driver_changes(vf.address) == binds
    assert_plugged(env, vif, vf, mode)

    os_vif.unplug(vif, INSTANCE)
    assert env.snapshot() == before
    os_vif.unplug(vif, INSTANCE)
    assert env.snapshot() == before


@pytest.mark.parametrize("mode", ["passthrough", "forwarder"])
@pytest.mark.parametrize("mac_before", ["another", "the port's"])
def test_a_second_unplug_leaves_a_vf_restored_by_the_first_as_it_was(
    env: PluginEnv, mode: str, mac_before: str
) -> None:
    # Nova's live migration of a direct port unplugs twice on the source
    # (detach, then post_live_migration_at_source). The first unplug restores
    # the VF from the journal; the second has no journal and no record of
    # changing the VF, so it must change nothing, even on a VF whose settings
    # before the plug were not the defaults: a MAC of its own, or the port's
    # MAC already (libvirt sets a hostdev interface's MAC on the VF itself).
    vf = env.vf(1, 13)
    vif = make_vif(env, mode, vf)
    mac = vif.address if mac_before == "the port's" else "fa:16:3e:00:01:13"
    privileged.set_vf(vf.pf_address, vf.index, {"mac": mac, "vlan": 9, "trust": True})
    try:
        before = env.snapshot()
        os_vif.plug(vif, INSTANCE)
        assert_plugged(env, vif, vf, mode)

        os_vif.unplug(vif, INSTANCE)
        assert env.snapshot() == before
        os_vif.unplug(vif, INSTANCE)

        assert env.snapshot() == before
        assert env.vf_settings(vf.address)["mac"] == mac
        assert notes_about(env, vf) == []
    finally:
        privileged.set_vf(vf.pf_address, vf.index,
                          {"mac": "00:00:00:00:00:00", "vlan": 0, "trust": False})


def test_an_unplug_naming_another_vf_undoes_the_journal_under_the_journals_vf_lock(
    env: PluginEnv,
) -> None:
    # Nova's rollback at a live migration's destination unplugs with the
    # instance's network info, which still names the source's VF; the journal
    # here names the VF this host plugged. Undoing that plan changes the
    # journal's VF, so the unplug must hold that VF's lock, not the other's:
    # a plug of the journal's VF in between would otherwise be undone too.
    vf, other = env.vf(0, 11), env.vf(0, 12)
    before = env.snapshot()
    vif = passthrough_vif(vf)
    os_vif.plug(vif, INSTANCE)
    stale = passthrough_vif(other, vif.id)
    stale.address = vif.address
    events: list[str] = []
    unplugging = threading.Thread(
        target=lambda: (os_vif.unplug(stale, INSTANCE), events.append("unplugged")))
    with loaded_plugin("smartnic").host.vf_lock(vf.address):
        unplugging.start()
        unplugging.join(1.0)
        events.append("lock released")
    unplugging.join(30)
    assert events == ["lock released", "unplugged"]
    assert env.snapshot() == before


@pytest.mark.parametrize("mode", ["passthrough", "forwarder"])
def test_unplugging_a_never_plugged_vif_succeeds_and_changes_nothing(
    env: PluginEnv, mode: str
) -> None:
    before = env.snapshot()
    os_vif.unplug(make_vif(env, mode, env.vf(0, 6)), INSTANCE)
    assert env.snapshot() == before


@pytest.mark.parametrize("mode", ["passthrough", "forwarder"])
def test_unplug_after_the_journal_was_lost_removes_what_the_port_left(
    env: PluginEnv, mode: str
) -> None:
    vf = env.vf(1, 10)
    before = env.snapshot()
    vif = make_vif(env, mode, vf)
    os_vif.plug(vif, INSTANCE)
    env.store().release(vif.port_profile.interface_id)  # the state database is lost

    os_vif.unplug(vif, INSTANCE)

    # The OVS port (by iface-id), the relay (by socket path), the VF's MAC
    # (the port's) and driver, and the representor's name are all back.
    after = env.snapshot()
    assert {k: v for k, v in after.items() if k != "links"} == {
        k: v for k, v in before.items() if k != "links"}
    assert after["links"].keys() == before["links"].keys()
    assert notes_about(env, vf) == []
    # Its MTU and flags from before the plug were only in the journal.
    assert vf.representor is not None
    mtu, up, promisc = before["links"][vf.representor.name]
    privileged.set_link(vf.representor.name, mtu=mtu, up=up, promisc=promisc)


@pytest.mark.parametrize("mode", ["passthrough", "forwarder"])
def test_unplug_without_a_journal_leaves_a_mac_that_is_not_the_ports(
    env: PluginEnv, mode: str
) -> None:
    # Nova's live migration of a direct port unplugs twice on the source; by
    # the second unplug the VF may carry something else. Without a journal
    # nothing says the VF's MAC was this port's doing.
    vf = env.vf(1, 11)
    privileged.set_vf(vf.pf_address, vf.index,
                      {"mac": "fa:16:3e:00:00:99"})
    try:
        plugged = env.snapshot()
        os_vif.unplug(make_vif(env, mode, vf), INSTANCE)
        assert env.vf_settings(vf.address)["mac"] == "fa:16:3e:00:00:99"
        assert env.snapshot() == plugged
    finally:
        privileged.set_vf(vf.pf_address, vf.index,
                          {"mac": "00:00:00:00:00:00"})


@pytest.mark.parametrize("rename", [False, True])
def test_unplugging_an_unknown_port_leaves_the_port_that_owns_the_vf_alone(
    env: PluginEnv, rename: bool
) -> None:
    # Nova cleaning up after a failed or moved instance unplugs VIFs this host
    # never plugged; one may name a VF that another port holds now.
    vf = env.vf(0, 7)
    before = env.snapshot()
    owner = forwarder_vif(env, vf, rename=rename)
    os_vif.plug(owner, INSTANCE)
    try:
        plugged = env.snapshot()

        os_vif.unplug(passthrough_vif(vf, rename=rename), INSTANCE)
        os_vif.unplug(forwarder_vif(env, vf, rename=rename), INSTANCE)

        assert env.snapshot() == plugged
        assert_plugged(env, owner, vf, "forwarder")
    finally:
        os_vif.unplug(owner, INSTANCE)
    assert env.snapshot() == before


# -- describe() and the profile objects --------------------------------------------------


def test_host_info_describes_every_vif_and_profile_with_installed_versions(
    plugin_env: PluginEnv,
) -> None:
    info = os_vif.host_info()
    expected = {
        "VIFOpenVSwitch": {"VIFPortProfileOpenVSwitch"},
        "VIFBridge": {"VIFPortProfileOpenVSwitch"},
        "VIFHostDevice": {
            "VIFPortProfilePassthrough", "VIFPortProfileOVSRepresentor",
            "DatapathOffloadRepresentor",
        },
        "VIFVHostUser": {
            "VIFPortProfileForwarder", "VIFPortProfileOVSRepresentor",
            "DatapathOffloadRepresentor",
        },
    }
    registry = ovo_base.VersionedObjectRegistry.obj_classes()
    for name in ("smartnic", "agilio_ovs"):
        plugin = info.get_plugin(name)
        assert {v.vif_object_name for v in plugin.vif_info} == set(expected)
        for vif_info in plugin.vif_info:
            profiles = {p.profile_object_name for p in vif_info.supported_port_profiles}
            assert profiles == expected[vif_info.vif_object_name]
            # The advertised max versions are the installed objects' versions.
            assert vif_info.max_version == registry[vif_info.vif_object_name][0].VERSION
            for p in vif_info.supported_port_profiles:
                assert p.max_version == registry[p.profile_object_name][0].VERSION
    # What Nova asks for when the guest has no shared memory: VIFVHostUser
    # filtered out, the plugin still offers VIFHostDevice.
    filtered = os_vif.host_info(permitted_vif_type_names=["VIFHostDevice"])
    assert [v.vif_object_name for v in filtered.get_plugin("smartnic").vif_info] == [
        "VIFHostDevice"
    ]
    # HostInfo travels to Nova as a primitive.
    again = osv.host_info.HostInfo.obj_from_primitive(info.obj_to_primitive())
    assert again.get_plugin("agilio_ovs").get_vif("VIFVHostUser").max_version == "1.1"


def comparable(primitive: Any) -> Any:
    """A primitive with its "changes" lists sorted: oslo.versionedobjects
    lists the changed fields of a set, in no fixed order."""
    if isinstance(primitive, dict):
        return {
            k: sorted(v) if k == "versioned_object.changes" else comparable(v)
            for k, v in primitive.items()
        }
    if isinstance(primitive, list):
        return [comparable(v) for v in primitive]
    return primitive


def test_profiles_round_trip_through_primitives(plugin_env: PluginEnv) -> None:
    vf = plugin_env.vf(0, 1)
    for vif in (
        passthrough_vif(vf, trusted=True, spoofchk=False),
        forwarder_vif(plugin_env, vf),
    ):
        primitive = vif.obj_to_primitive()
        # As it travels (RPC, privsep, a journal): through JSON.
        again = osv.vif.VIFBase.obj_from_primitive(json.loads(json.dumps(primitive)))
        assert type(again) is type(vif)
        assert type(again.port_profile) is type(vif.port_profile)
        for field in vif.port_profile.fields:
            if vif.port_profile.obj_attr_is_set(field):
                assert getattr(again.port_profile, field) == getattr(vif.port_profile, field)
        assert comparable(again.obj_to_primitive()) == comparable(primitive)
    relay = VIFPortProfileForwarder(
        interface_id=new_port_id(), representor_address=vf.address, relay_driver="uio_pci"
    )
    primitive = relay.obj_to_primitive()
    assert primitive["versioned_object.name"] == "VIFPortProfileForwarder"
    assert primitive["versioned_object.namespace"] == "os_vif"
    assert VIFPortProfileForwarder.obj_from_primitive(primitive).relay_driver == "uio_pci"


# -- failures: a clear error and nothing left behind --------------------------------------


def assert_released(env: PluginEnv, vif: Any) -> None:
    assert env.store().get(vif.port_profile.interface_id) is None
    assert env.ovs.find_ports_by_iface_id(vif.port_profile.interface_id) == []


def test_forwarder_not_running(env: PluginEnv) -> None:
    vf = env.vf(1, 6)
    pid = env.sim.processes()["virtio-forwarder-sim"]
    stop_pid(os.path.join(env.sim.layout.forwarder_dir, "forwarder.pid"))
    try:
        assert "virtio-forwarder-sim" not in env.sim.processes()
        env.override("forwarder_timeout", 0.3)
        vif = forwarder_vif(env, vf)

        assert_plug_fails(vif, "virtio-forwarder ADD_SOCK", "did not answer ADD_SOCK")

        assert_released(env, vif)
        assert env.vf_driver(vf.address) == "nfp"
        assert env.vf_settings(vf.address)["mac"] == "00:00:00:00:00:00"
        # The withdrawal of the relay that never answered is not confirmed:
        # noted for status, without holding the VF.
        assert any("undo not confirmed" in n["what"] and "REMOVE_SOCK" in n["what"]
                   for n in notes_about(env, vf))
    finally:
        env.restart_forwarder()
    assert env.sim.processes()["virtio-forwarder-sim"] != pid


def test_unplug_with_the_forwarder_down_keeps_the_journal_for_a_later_unplug(
    env: PluginEnv,
) -> None:
    vf = env.vf(1, 13)
    vif = forwarder_vif(env, vf)
    os_vif.plug(vif, INSTANCE)
    stop_pid(os.path.join(env.sim.layout.forwarder_dir, "forwarder.pid"))
    try:
        env.override("forwarder_timeout", 0.3)

        with pytest.raises(osv_exception.UnplugException) as excinfo:
            os_vif.unplug(vif, INSTANCE)

        message = str(excinfo.value)
        assert "incomplete" in message and "did not answer REMOVE_SOCK" in message
        # Every other change was undone; the journal stays for the relay.
        record = env.store().get(vif.port_profile.interface_id)
        assert record is not None and record.phase == "unplugging"
        assert env.ovs.find_ports_by_iface_id(vif.port_profile.interface_id) == []
        assert env.vf_driver(vf.address) == "nfp"
        assert env.vf_settings(vf.address)["mac"] == "00:00:00:00:00:00"
        assert vf.representor is not None and link(vf.representor.name) == (1500, False, False)
    finally:
        env.restart_forwarder()

    os_vif.unplug(vif, INSTANCE)

    assert env.store().get(vif.port_profile.interface_id) is None


def test_forwarder_answering_error(env: PluginEnv) -> None:
    vf, other = env.vf(1, 7), env.vf(1, 8)
    vif = forwarder_vif(env, vf)
    lay = env.sim.layout
    kernel = SimulatedKernel(env.sim.dir)
    with ForwarderClient(lay.port_control_endpoint, lay.stats_endpoint, 2.0) as client:
        # Someone else's relay already uses this socket path (the daemon
        # attaches only a VF bound to a driver DPDK can use).
        kernel.bind_driver(other.address, "vfio-pci")
        client.add_sock(other.address, vif.path)
        try:
            message = assert_plug_fails(vif, "virtio-forwarder ADD_SOCK", "error code 1 ")
            assert "virtio_add_sock_dev_pair()" in message
            assert "EPERM" not in message  # 1 is the daemon's step, not an errno

            assert_released(env, vif)
            assert env.relay_pairs() == [(other.address, vif.path)]
            assert env.vf_driver(vf.address) == "nfp"
            assert link(devname(vif.id)) is None
        finally:
            client.remove_sock(other.address, vif.path)
            kernel.bind_driver(other.address, "nfp")


def test_forwarder_not_answering(env: PluginEnv) -> None:
    directory = short_tmpdir()
    hung = ForwarderSimulator(
        f"ipc://{directory}/pc", f"ipc://{directory}/stats", sysfs_root=env.sim.dir
    ).start()
    hung.drop_replies = True
    try:
        env.override("forwarder_port_control_endpoint", hung.port_control_endpoint)
        env.override("forwarder_stats_endpoint", hung.stats_endpoint)
        env.override("forwarder_timeout", 0.3)
        vf = env.vf(1, 9)
        vif = forwarder_vif(env, vf)

        assert_plug_fails(vif, "virtio-forwarder ADD_SOCK", "did not answer ADD_SOCK")

        assert_released(env, vif)
        assert env.vf_driver(vf.address) == "nfp"
        # The daemon did the work but its answer was lost: the relay it made
        # for a port that failed to plug must not stay.
        assert hung.relays() == []
    finally:
        hung.stop()
        shutil.rmtree(directory, ignore_errors=True)


class SmallForwarder:
    """A forwarder simulator of the test's own with few relay slots (a daemon
    of another DPDK build), the plugin pointed at it for the test."""

    def __init__(self, env: PluginEnv, max_relays: int = 1) -> None:
        self.directory = short_tmpdir()
        self.endpoints = (f"ipc://{self.directory}/pc", f"ipc://{self.directory}/stats")
        self.sysfs_root = env.sim.dir
        self.sim = ForwarderSimulator(*self.endpoints, sysfs_root=self.sysfs_root,
                                      max_relays=max_relays).start()
        env.override("forwarder_port_control_endpoint", self.sim.port_control_endpoint)
        env.override("forwarder_stats_endpoint", self.sim.stats_endpoint)

    def restart(self, max_relays: int) -> None:
        """Restart the daemon on the same endpoints: it knows no relay."""
        self.sim.stop()
        self.sim = ForwarderSimulator(*self.endpoints, sysfs_root=self.sysfs_root,
                                      max_relays=max_relays).start()

    def relays(self) -> list[Any]:
        return self.sim.relays()

    def __enter__(self) -> SmallForwarder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sim.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def test_forwarder_plug_beyond_the_relay_limit_changes_nothing(env: PluginEnv) -> None:
    with SmallForwarder(env, max_relays=1) as small:
        first, second = env.vf(1, 10), env.vf(1, 11)
        taken = forwarder_vif(env, first)
        os_vif.plug(taken, INSTANCE)
        try:
            before = env.snapshot()
            vif = forwarder_vif(env, second)
            message = assert_plug_fails(vif, "no free relay", "1 of its 1 relays", "limit")
            assert second.address in message
            assert env.snapshot() == before  # nothing changed, nothing to undo
            assert_released(env, vif)
            assert env.vf_driver(second.address) == "nfp"
            assert [r.relay_id for r in small.relays()] == [0]
            # The same VF again (its relay exists) is a re-plug, not a new relay.
            os_vif.plug(taken, INSTANCE)
        finally:
            os_vif.unplug(taken, INSTANCE)
        assert small.relays() == []


def test_a_plugged_forwarder_port_keeps_its_relay_slot_across_a_daemon_restart(
    env: PluginEnv,
) -> None:
    # The restarted daemon has forgotten the plugged port's relay, so its slot
    # looks free; it is not: reconcile must be able to put that relay back.
    with SmallForwarder(env, max_relays=1) as small:
        first, second = env.vf(1, 10), env.vf(1, 11)
        taken = forwarder_vif(env, first)
        os_vif.plug(taken, INSTANCE)
        try:
            small.restart(max_relays=1)
            assert small.relays() == []
            before = env.snapshot()
            vif = forwarder_vif(env, second)
            assert_plug_fails(vif, "no free relay", "1 of its 1 relays", "limit")
            assert env.snapshot() == before and small.relays() == []
            assert_released(env, vif)
            # The slot is the plugged port's: its repair adds the relay again.
            plugin = loaded_plugin("smartnic")
            assert any("ADD_SOCK" in r for r in plugin.repair(taken.id))
            assert [r.relay_id for r in small.relays()] == [0]
        finally:
            os_vif.unplug(taken, INSTANCE)
        assert small.relays() == []


def test_a_daemon_restarted_with_more_relay_slots_is_not_refused_by_the_count_read_before(
    env: PluginEnv,
) -> None:
    # nova-compute's plugin lives as long as nova-compute: the slot count it
    # read from the old daemon must not refuse a plug the new daemon has room for.
    with SmallForwarder(env, max_relays=1) as small:
        first, second = env.vf(1, 10), env.vf(1, 11)
        taken = forwarder_vif(env, first)
        os_vif.plug(taken, INSTANCE)  # the plugin has read "1 slot"
        vif = forwarder_vif(env, second)
        try:
            small.restart(max_relays=2)
            os_vif.plug(vif, INSTANCE)
            assert env.store().get(vif.id) is not None
            # (the restart forgot the first port's relay: reconcile would put it back)
            assert [r.device.lower() for r in small.relays()] == [second.address.lower()]
        finally:
            os_vif.unplug(vif, INSTANCE)
            os_vif.unplug(taken, INSTANCE)
        assert small.relays() == []


def test_a_claim_whose_plug_has_not_started_holds_no_relay_slot(env: PluginEnv) -> None:
    # attach claims its VF before it plugs. Such a claim has no relay (reconcile
    # releases it as one that never touched the host): counted as a slot, two
    # attaches racing for the last slot refused each other, and one that died
    # before its plug blocked every forwarder plug until reconcile.
    pending = new_port_id()
    with SmallForwarder(env, max_relays=1) as small:
        try:
            env.store().claim(pending, env.vf(1, 12).address, "forwarder", {})
            vif = forwarder_vif(env, env.vf(1, 10))
            os_vif.plug(vif, INSTANCE)
            try:
                assert [r.device.lower() for r in small.relays()] == [env.vf(1, 10).address]
            finally:
                os_vif.unplug(vif, INSTANCE)
        finally:
            env.store().release(pending)


@pytest.mark.parametrize("mode", ["passthrough", "forwarder"])
def test_representor_missing(env: PluginEnv, mode: str) -> None:
    vf = env.vf(0, 8)
    assert vf.representor is not None
    rep = vf.representor.name
    with IPRoute() as ipr:
        ipr.link("del", ifname=rep)
    try:
        vif = make_vif(env, mode, vf)

        assert_plug_fails(vif, rep, "does not exist")

        assert_released(env, vif)
        assert env.vf_settings(vf.address)["mac"] == "00:00:00:00:00:00"
        assert env.vf_driver(vf.address) == "nfp"
        assert env.relay_pairs() == []
    finally:
        env.recreate_representor(vf.address)


@pytest.mark.parametrize("rename", [False, True])
def test_a_representor_that_vanished_while_plugged_does_not_block_unplug(
    env: PluginEnv, rename: bool
) -> None:
    vf = env.vf(0, 9)
    vif = passthrough_vif(vf, rename=rename)
    os_vif.plug(vif, INSTANCE)
    with IPRoute() as ipr:
        ipr.link("del", ifname=port_name(vif, vf))
    try:
        os_vif.unplug(vif, INSTANCE)

        # The undo of the representor found it gone: a note, not an error.
        port_id = vif.port_profile.interface_id
        assert_released(env, vif)
        assert env.vf_settings(vf.address)["mac"] == "00:00:00:00:00:00"
        [note] = notes_about(env, vf)
        assert (note["port_id"], note["vf"]) == (port_id, vf.address)
        assert "does not exist" in note["what"]
        os_vif.unplug(vif, INSTANCE)  # again: nothing left, nothing noted twice
        assert len(notes_about(env, vf)) == 1
    finally:
        env.recreate_representor(vf.address)
    # Plugging the VF again makes the note obsolete.
    again = passthrough_vif(vf, rename=rename)
    os_vif.plug(again, INSTANCE)
    assert notes_about(env, vf) == []
    os_vif.unplug(again, INSTANCE)


@pytest.mark.parametrize("mode", ["passthrough", "forwarder"])
def test_a_representor_renamed_by_another_process_is_found_again(
    env: PluginEnv, mode: str
) -> None:
    # This process discovered the host earlier (nova-compute keeps its
    # discovery for days); since then another process renamed the
    # representor: an attach or detach of the CLI, or a port that was plugged
    # when this process started and was unplugged since. sysfs follows the
    # rename, so a new discovery knows it by its name now.
    vf = env.vf(1, 12)
    assert vf.representor is not None
    kernel_name, elsewhere = vf.representor.name, "snv-other0"
    plugin = loaded_plugin("smartnic")
    assert plugin.host.inventory().representor_of(vf.address).name == kernel_name
    before = env.snapshot()
    privileged.set_link(kernel_name, new_name=elsewhere)
    try:
        # The simulated sysfs follows the rename as the kernel's does.
        assert os.path.islink(os.path.join(env.sim.dir, "sys", "class", "net", elsewhere))
        assert not os.path.lexists(os.path.join(env.sim.dir, "sys", "class", "net", kernel_name))
        vif = make_vif(env, mode, vf)
        os_vif.plug(vif, INSTANCE)
        assert link(devname(vif.id)) is not None and link(elsewhere) is None
        assert plugin.host.inventory().representor_of(vf.address).name == devname(vif.id)
        os_vif.unplug(vif, INSTANCE)
        # Unplug gives the representor back the name it had before the plug.
        assert link(elsewhere) is not None and link(devname(vif.id)) is None
        assert plugin.host.inventory().representor_of(vf.address).name == elsewhere
    finally:
        privileged.set_link(elsewhere, new_name=kernel_name, or_name=kernel_name)
    assert env.snapshot() == before


def notes_about(env: PluginEnv, vf: VirtualFunction) -> list[dict[str, Any]]:
    """What unplugs of ``vf``'s ports could not restore (see ``status``)."""
    return [n for n in env.store().unrestored() if n["vf"] == vf.address]


@pytest.mark.parametrize("mode", ["passthrough", "forwarder"])
def test_ovsdb_unreachable(env: PluginEnv, mode: str) -> None:
    nowhere = short_tmpdir()
    try:
        env.override("ovsdb_connection", f"unix:{nowhere}/db.sock")
        env.override("ovsdb_timeout", 1)
        vf = env.vf(0, 9)
        vif = make_vif(env, mode, vf)

        assert_plug_fails(vif, "to br-int as port", f"cannot reach OVSDB at unix:{nowhere}")

        assert_released(env, vif)
        assert env.vf_settings(vf.address)["mac"] == "00:00:00:00:00:00"
        assert env.vf_driver(vf.address) == "nfp"
        assert link(devname(vif.id)) is None
    finally:
        os.rmdir(nowhere)


@pytest.mark.parametrize("mode", ["passthrough", "forwarder"])
@pytest.mark.parametrize("phase", ["pre-plug", "post-plug"])
def test_vendor_hook_failing(env: PluginEnv, hook_dir: str, mode: str, phase: str) -> None:
    hook = write_hook(
        hook_dir,
        f'if [ "$1" = {phase} ]; then echo "refused by the vendor" >&2; exit 1; fi\n',
    )
    env.override("vendor_hook", hook)
    vf = env.vf(1, 10)
    vif = make_vif(env, mode, vf)

    assert_plug_fails(
        vif, f"run vendor hook ({phase})", "exited 1", "refused by the vendor"
    )

    assert_released(env, vif)
    assert env.vf_settings(vf.address)["mac"] == "00:00:00:00:00:00"
    assert env.relay_pairs() == []


@pytest.mark.parametrize("mode", ["passthrough", "forwarder"])
def test_vendor_hook_gets_the_documented_arguments(
    env: PluginEnv, hook_dir: str, mode: str
) -> None:
    record = os.path.join(hook_dir, "calls")
    hook = write_hook(hook_dir, f'echo "$@" >> {record}\n')
    env.override("vendor_hook", hook)
    vf = env.vf(1, 11)
    vif = make_vif(env, mode, vf)

    os_vif.plug(vif, INSTANCE)
    os_vif.plug(vif, INSTANCE)  # already plugged: the hook does not run again
    os_vif.unplug(vif, INSTANCE)

    socket = vif.path if mode == "forwarder" else "-"
    tail = f"{mode} {vf.address} {devname(vif.id)} {vif.address} {socket}"
    with open(record) as f:
        assert f.read().splitlines() == [
            f"pre-plug {tail}",
            f"post-plug {tail}",
            f"post-unplug {tail}",
        ]


# -- concurrency -------------------------------------------------------------------------


def run_together(calls: list[Callable[[], None]]) -> list[BaseException | None]:
    """Run every call in its own thread, all released at once; their errors."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], None]) -> BaseException | None:
        barrier.wait()
        try:
            call()
        except BaseException as e:  # noqa: BLE001 - returned to the test
            return e
        return None

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


def test_32_vifs_plugged_and_unplugged_from_32_threads(env: PluginEnv) -> None:
    before = env.snapshot()
    vfs = env.all_vfs()
    assert len(vfs) == 32
    modes = ["passthrough" if i % 2 else "forwarder" for i in range(len(vfs))]
    vifs = [(vf, mode, make_vif(env, mode, vf)) for vf, mode in zip(vfs, modes, strict=True)]

    errors = run_together([functools.partial(os_vif.plug, v, INSTANCE) for _, _, v in vifs])
    assert errors == [None] * 32
    try:
        ports = env.ovs.list_ports("br-int")
        assert len(ports) == 32
        iface_ids = {env.ovs.get_port(p).external_ids["iface-id"] for p in ports}  # type: ignore[union-attr]
        assert iface_ids == {v.port_profile.interface_id for _, _, v in vifs}
        for vf, mode, vif in vifs:
            assert_plugged(env, vif, vf, mode)
        assert len(env.relay_pairs()) == 16
    finally:
        errors = run_together([functools.partial(os_vif.unplug, v, INSTANCE) for _, _, v in vifs])
    assert errors == [None] * 32
    assert env.ovs.list_ports("br-int") == []
    assert env.snapshot() == before


def test_two_threads_plugging_two_vifs_on_the_same_vf(env: PluginEnv) -> None:
    vf = env.vf(0, 10)
    before = env.snapshot()
    first, second = forwarder_vif(env, vf), forwarder_vif(env, vf)

    errors = run_together([lambda: os_vif.plug(first, INSTANCE),
                           lambda: os_vif.plug(second, INSTANCE)])

    assert sorted(e is None for e in errors) == [False, True]
    winner, loser = (first, second) if errors[0] is None else (second, first)
    error = errors[1] if errors[0] is None else errors[0]
    assert isinstance(error, osv_exception.PlugException)
    assert f"already claimed by port {winner.port_profile.interface_id}" in str(error)
    try:
        assert_plugged(env, winner, vf, "forwarder")
        assert_released(env, loser)
        assert link(devname(loser.id)) is None
        # Nova cleans up after the failed plug: that must not hurt the winner.
        os_vif.unplug(loser, INSTANCE)
        assert_plugged(env, winner, vf, "forwarder")
    finally:
        os_vif.unplug(winner, INSTANCE)
    assert env.snapshot() == before
