"""The simulated SmartNIC host with real veths, namespaces, OVS and forwarder.

Hosts with OVS run in a fresh network namespace of their own (see
``tests/fixtures/sim.py``: the userspace datapath's ``ovs-netdev`` tap has a
fixed name, so two of them cannot share a namespace); that namespace plays the
host's root namespace: representors and PF uplinks live there, each VF's netdev
in a named namespace of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import IPRoute, NetNS, netns

from smartnic_vif import conf
from smartnic_vif.host import ovsdb
from smartnic_vif.host.discovery import discover
from smartnic_vif.host.ovsdb import OvsdbClient
from smartnic_vif.sim.host import MANIFEST, SimulatedHost, SimulatorError
from smartnic_vif.sim.ovs import PrivateOVS
from tests.fixtures.sim import create_host, destroy_host, isolated_netns, short_tmpdir

pytestmark = pytest.mark.root

IP = "ip"
SimFactory = Callable[..., SimulatedHost]
CLI = os.path.join(os.path.dirname(sys.executable), "smartnic-vif")
PROCESS_NAMES = {"ovsdb-server", "ovs-vswitchd", "virtio-forwarder-sim"}


# -- helpers -----------------------------------------------------------------------


def process_gone(pid: int) -> bool:
    """No such process, or one that has exited and waits to be reaped."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line mentions ``text`` (a host's directory)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and not process_gone(int(entry)):
            found.append(int(entry))
    return found


def links_with_prefix(prefix: str) -> list[str]:
    with IPRoute() as ipr:
        return sorted(
            name
            for msg in ipr.get_links()
            if (name := msg.get_attr("IFLA_IFNAME")).startswith(prefix)
        )


def namespaces_with_prefix(prefix: str) -> list[str]:
    return sorted(ns for ns in netns.listnetns() if ns.startswith(prefix))


def assert_nothing_left(sim_id: str, dir: str, pids: list[int]) -> None:
    prefix = f"sn{sim_id}"
    assert [p for p in pids if not process_gone(p)] == []
    assert processes_mentioning(dir) == []
    assert links_with_prefix(prefix) == []
    assert links_with_prefix("ovs-netdev") == []
    assert namespaces_with_prefix(prefix) == []
    assert not os.path.exists(dir)


def link_in_ns(ns: str, name: str) -> dict[str, object] | None:
    with NetNS(ns, flags=0) as nsr:  # flags=0: never create a missing namespace
        found = nsr.link_lookup(ifname=name)
        if not found:
            return None
        msg = nsr.get_links(found[0])[0]
        return {"mac": msg.get_attr("IFLA_ADDRESS"), "up": bool(msg["flags"] & 1)}


def run(*argv: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - argv list, no shell
        list(argv), capture_output=True, text=True, timeout=timeout, check=False
    )


def ping(ns: str, address: str, count: int = 3, wait: int = 2) -> subprocess.CompletedProcess[str]:
    return run(
        IP,
        "netns",
        "exec",
        ns,
        "ping",
        "-n",
        "-c",
        str(count),
        "-i",
        "0.2",
        "-W",
        str(wait),
        address,
    )


# -- a full host: 2 PFs x 8 VFs, OVS and forwarder -----------------------------------


@pytest.fixture(scope="class")
def host() -> Iterator[SimulatedHost]:
    """One full host for the read-only tests of TestFullHost (torn down after the
    class, before the teardown tests below need the namespace's OVS slot)."""
    with isolated_netns():
        host = create_host(pfs=2, vfs_per_pf=8, with_ovs=True, with_forwarder=True)
        try:
            yield host
        finally:
            destroy_host(host)


class TestFullHost:
    def test_discovery_sees_16_vfs_with_representors(self, host: SimulatedHost) -> None:
        inv = discover(host.layout.sysfs_root)
        assert len(inv.pfs) == 2 and all(pf.switchdev for pf in inv.pfs)
        assert len({pf.switch_id for pf in inv.pfs}) == 1
        vfs = list(inv.vfs())
        assert len(vfs) == 16
        assert len({vf.address for vf in vfs}) == 16
        for p, pf in enumerate(inv.pfs):
            assert pf.netdev == f"sn{host.layout.sim_id}p{p}"
            for vf in pf.vfs:
                assert (
                    inv.representor_of(vf.address).name == f"sn{host.layout.sim_id}p{p}r{vf.index}"
                )
                assert vf.netdev == host.vf_netdev(vf.address)
                assert vf.driver == "nfp"

    def test_representors_are_links_and_vf_netdevs_live_in_their_namespaces(
        self, host: SimulatedHost
    ) -> None:
        inv = discover(host.layout.sysfs_root)
        expected_links = sorted(
            [pf.netdev for pf in inv.pfs if pf.netdev]
            + [vf.representor.name for vf in inv.vfs() if vf.representor]
        )
        assert len(expected_links) == 18
        assert host.existing_links() == expected_links
        assert links_with_prefix(f"sn{host.layout.sim_id}") == expected_links
        # One namespace per VF plus the wire namespace holding the uplinks' peers.
        assert len(host.existing_namespaces()) == 17
        for vf in inv.vfs():
            ns = host.vf_namespace(vf.address)
            assert ns in host.existing_namespaces()
            link = link_in_ns(ns, host.vf_netdev(vf.address))
            assert link is not None, f"{vf.netdev} missing in {ns}"
            # Its MAC is the one the kernel state remembers as the netdev's own.
            assert link["mac"] == host.kernel_state(vf.address)["netdev_mac"]
            # ... and it is not in the host namespace.
            assert links_with_prefix(host.vf_netdev(vf.address)) == []

    def test_processes_run(self, host: SimulatedHost) -> None:
        procs = host.processes()
        assert set(procs) == PROCESS_NAMES
        assert all(not process_gone(pid) for pid in procs.values())

    def test_config_file_read_by_oslo_config(self, host: SimulatedHost) -> None:
        assert os.path.isfile(host.config_file)
        group = conf.load([host.config_file])
        assert group.sysfs_root == host.layout.sysfs_root == host.dir
        assert group.kernel_backend == "simulated"
        assert group.ovsdb_connection == host.layout.ovsdb_connection
        assert group.ovsdb_connection == f"unix:{host.dir}/ovs/db.sock"
        assert os.path.exists(group.ovsdb_connection.removeprefix("unix:"))
        assert discover(group.sysfs_root).pfs[0].address == "0000:05:00.0"

    def test_a_second_host_in_the_same_directory_is_refused(self, host: SimulatedHost) -> None:
        with pytest.raises(SimulatorError, match="already holds a simulated host"):
            SimulatedHost.create(
                host.dir, pfs=1, vfs_per_pf=1, with_ovs=False, with_forwarder=False
            )
        assert set(host.processes()) == PROCESS_NAMES

    def test_two_vfs_ping_each_other_through_ovs(self, host: SimulatedHost) -> None:
        inv = discover(host.layout.sysfs_root)
        # One VF of each PF: the path is VF -> representor -> OVS -> representor -> VF.
        ends = [inv.pfs[0].vfs[1], inv.pfs[1].vfs[6]]
        addresses = ["10.251.0.1", "10.251.0.2"]
        for vf, address in zip(ends, addresses, strict=True):
            ns, dev = host.vf_namespace(vf.address), host.vf_netdev(vf.address)
            with NetNS(ns, flags=0) as nsr:
                index = nsr.link_lookup(ifname=dev)[0]
                nsr.addr("add", index=index, address=address, prefixlen=24)
                nsr.link("set", index=index, state="up")
        reps = [inv.representor_of(vf.address).name for vf in ends]
        with IPRoute() as ipr:
            for rep in reps:
                ipr.link("set", index=ipr.link_lookup(ifname=rep)[0], state="up")
        src_ns = host.vf_namespace(ends[0].address)

        # Representors up but on no bridge: nothing carries the packets.
        assert ping(src_ns, addresses[1], count=1, wait=1).returncode != 0

        bridge = f"br{host.layout.sim_id}"
        client = OvsdbClient(host.layout.ovsdb_connection, 10)
        try:
            assert client.ensure_bridge(bridge, "netdev") == "netdev"
            for vf, rep in zip(ends, reps, strict=True):
                info = client.set_port(
                    bridge,
                    rep,
                    iface_id=str(uuid.uuid4()),
                    mac=host.kernel_state(vf.address)["netdev_mac"],
                    vm_uuid=str(uuid.uuid4()),
                    mtu=1500,
                )
                assert (info.bridge, info.error) == (bridge, None)
                assert info.ofport is not None and info.ofport > 0
            assert client.list_ports(bridge) == sorted(reps)

            result = ping(src_ns, addresses[1])
            assert result.returncode == 0, result.stdout + result.stderr
            assert " 0% packet loss" in result.stdout
            back = ping(host.vf_namespace(ends[1].address), addresses[0])
            assert back.returncode == 0, back.stdout + back.stderr

            # Take one representor off the bridge: the path is gone again.
            assert client.delete_port(reps[1], bridge)
            assert ping(src_ns, addresses[1], count=1, wait=1).returncode != 0
        finally:
            client.delete_bridge(bridge)
            client.close()
            ovsdb.close_connection(host.layout.ovsdb_connection)


# -- teardown --------------------------------------------------------------------------


def test_destroy_leaves_nothing_and_can_be_repeated(sim_host: SimFactory) -> None:
    host = sim_host(pfs=2, vfs_per_pf=4, with_ovs=True, with_forwarder=True)
    pids = list(host.processes().values())
    assert len(pids) == 3
    assert len(host.existing_links()) == 10
    # A userspace bridge makes OVS create its persistent taps; destroy must
    # remove them too.
    bridge = f"br{host.layout.sim_id}"
    with OvsdbClient(host.layout.ovsdb_connection, 10) as client:
        client.ensure_bridge(bridge, "netdev")
    ovsdb.close_connection(host.layout.ovsdb_connection)
    assert links_with_prefix("ovs-netdev") == ["ovs-netdev"]
    assert links_with_prefix(bridge) == [bridge]

    host.destroy()
    assert links_with_prefix(bridge) == []
    assert_nothing_left(host.layout.sim_id, host.dir, pids)
    assert host.processes() == {}
    assert host.existing_links() == [] and host.existing_namespaces() == []

    host.destroy()  # again: nothing to do, no error
    assert not os.path.exists(host.dir)
    with pytest.raises(SimulatorError, match="no simulated host"):
        SimulatedHost.load(host.dir)


@pytest.mark.parametrize("failing_step", ["ovs", "config"])
def test_failure_halfway_through_create_leaves_nothing(
    sim_host: SimFactory, monkeypatch: pytest.MonkeyPatch, failing_step: str
) -> None:
    seen: dict[str, Any] = {}

    def sim_id_of(dir: str) -> str:
        with open(os.path.join(dir, MANIFEST)) as f:
            return str(json.load(f)["sim_id"])

    def failing_ovs_start(self: PrivateOVS) -> None:
        # The netdevs and namespaces exist by now; OVS "fails" to start.
        sim_dir = os.path.dirname(self.run_dir)
        seen["sim_id"], seen["dir"] = sim_id_of(sim_dir), sim_dir
        seen["links"] = links_with_prefix(f"sn{seen['sim_id']}")
        seen["pids"] = []
        raise RuntimeError("injected: OVS did not start")

    def failing_write_config(self: SimulatedHost) -> None:
        # OVS and the forwarder run by now; writing the config "fails".
        seen["sim_id"], seen["dir"] = self.layout.sim_id, self.dir
        seen["links"] = links_with_prefix(f"sn{self.layout.sim_id}")
        seen["pids"] = list(self.processes().values())
        raise RuntimeError("injected: cannot write the config file")

    if failing_step == "ovs":
        monkeypatch.setattr(PrivateOVS, "start", failing_ovs_start)
    else:
        monkeypatch.setattr(SimulatedHost, "_write_config", failing_write_config)

    with pytest.raises(RuntimeError, match="injected"):
        sim_host(pfs=2, vfs_per_pf=4, with_ovs=True, with_forwarder=True)

    assert len(seen["links"]) == 10
    assert len(seen["pids"]) == (0 if failing_step == "ovs" else 3)
    assert_nothing_left(seen["sim_id"], seen["dir"], seen["pids"])


def test_destroy_after_the_forwarder_was_killed(sim_host: SimFactory) -> None:
    host = sim_host(pfs=1, vfs_per_pf=4, with_forwarder=True)
    pid = host.processes()["virtio-forwarder-sim"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while not process_gone(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert host.processes() == {}

    host.destroy()
    assert_nothing_left(host.layout.sim_id, host.dir, [pid])


def test_destroy_right_after_vf_namespaces_vanished(sim_host: SimFactory) -> None:
    # Deleting a namespace takes the veth peers in it along, asynchronously:
    # destroy lists a representor that is gone by the time it deletes it. That
    # must neither stop the teardown halfway nor be reported as a failure.
    host = sim_host(pfs=2, vfs_per_pf=4)
    inv = discover(host.dir)
    victims = [inv.pfs[0].vfs[3], inv.pfs[1].vfs[0]]
    for vf in victims:
        run(IP, "netns", "del", host.vf_namespace(vf.address)).check_returncode()
    host.destroy()
    assert_nothing_left(host.layout.sim_id, host.dir, [])


def test_load_and_destroy_from_a_new_process(sim_host: SimFactory) -> None:
    host = sim_host(pfs=2, vfs_per_pf=2, with_ovs=True, with_forwarder=True)
    pids = list(host.processes().values())
    assert len(pids) == 3
    loaded = SimulatedHost.load(host.dir)
    assert loaded.layout == host.layout

    code = (
        "import sys\n"
        "from smartnic_vif.sim.host import SimulatedHost\n"
        "SimulatedHost.load(sys.argv[1]).destroy()\n"
    )
    result = run(sys.executable, "-c", code, host.dir, timeout=60)
    assert result.returncode == 0, result.stderr
    assert_nothing_left(host.layout.sim_id, host.dir, pids)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"port_name_form": "pf-vf"}, "invalid port_name_form .pf-vf."),
        ({"driver": "e1000"}, "invalid driver"),
        ({"pfs": 0}, "invalid pfs 0: expected 1-8"),
        ({"legacy_pfs": 9}, "invalid legacy_pfs 9: expected 0-8"),
        ({"max_relays": 0}, "invalid max_relays 0: expected 1-128"),
        ({"vfs_per_pf": 0}, "invalid vfs_per_pf"),
        ({"vfs_per_pf": 257}, "invalid vfs_per_pf"),
    ],
)
def test_create_refuses_bad_arguments_before_making_anything(
    tmp_path: Path, kwargs: dict[str, Any], match: str
) -> None:
    target = tmp_path / "sim"
    with pytest.raises(SimulatorError, match=match):
        SimulatedHost.create(str(target), with_ovs=False, with_forwarder=False, **kwargs)
    assert not target.exists()


@pytest.mark.parametrize(("option", "value", "said"), [
    ("--pfs", "9", "--pfs 9: expected 1-8"),
    ("--legacy-pfs", "9", "--legacy-pfs 9: expected 0-8"),
    ("--vfs-per-pf", "0", "--vfs-per-pf 0: expected 1-256"),
    ("--max-relays", "0", "--max-relays 0: expected 1-128"),
    ("--max-relays", "1000", "--max-relays 1000: expected 1-128"),
])
def test_sim_create_names_the_option_it_refuses(
    tmp_path: Path, option: str, value: str, said: str
) -> None:
    target = tmp_path / "sim"
    proc = run(CLI, "sim", "create", "--dir", str(target), option, value)
    assert proc.returncode == 2, explain(proc)
    assert said in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, explain(proc)
    assert not target.exists()


# -- the directory: destroy removes only what create made ------------------------------


def test_create_refuses_a_directory_holding_other_files() -> None:
    parent = short_tmpdir()
    target = os.path.join(parent, "mine")
    os.mkdir(target)
    with open(os.path.join(target, "precious"), "w") as f:
        f.write("keep me")
    ns = f"snvt-{uuid.uuid4().hex[:8]}"
    run(IP, "netns", "add", ns).check_returncode()
    try:
        proc = cli_in_netns(ns, "sim", "create", "--dir", target, "--pfs", "1",
                            "--vfs-per-pf", "1")
        assert proc.returncode == 2, explain(proc)
        assert target in proc.stderr and "not empty" in proc.stderr, explain(proc)
        assert os.listdir(target) == ["precious"]
    finally:
        if os.path.exists(os.path.join(target, MANIFEST)):
            cli_in_netns(ns, "sim", "destroy", "--dir", target)
        run(IP, "netns", "del", ns)
        with open(os.path.join(target, "precious")) as f:
            assert f.read() == "keep me"
        shutil.rmtree(parent, ignore_errors=True)


def test_destroy_keeps_what_create_did_not_make() -> None:
    parent = short_tmpdir()
    try:
        # A directory create made (it did not exist) and one that was empty:
        # both go, with everything create put there...
        for target in (os.path.join(parent, "new"), short_tmpdir()):
            host = create_host(target, pfs=1, vfs_per_pf=1)
            SimulatedHost.load(target).destroy()
            assert_nothing_left(host.layout.sim_id, target, [])
        # ... but files someone else put there stay, and so does the directory.
        target = os.path.join(parent, "shared")
        host = create_host(target, pfs=1, vfs_per_pf=1)
        with open(os.path.join(target, "notes.txt"), "w") as f:
            f.write("mine")
        destroyed = run(CLI, "sim", "destroy", "--dir", target)
        assert destroyed.returncode == 0, explain(destroyed)
        assert f"kept {target}" in destroyed.stdout and "notes.txt" in destroyed.stdout
        assert sorted(os.listdir(target)) == ["notes.txt"]
        with open(os.path.join(target, "notes.txt")) as f:
            assert f.read() == "mine"
        assert links_with_prefix(f"sn{host.layout.sim_id}") == []
        assert namespaces_with_prefix(f"sn{host.layout.sim_id}") == []
    finally:
        shutil.rmtree(parent, ignore_errors=True)


# -- a host made under one "ip netns exec" and used from the next ----------------------


def cli_in_netns(ns: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """``smartnic-vif ARGV`` run by ``ip netns exec NS``: a fresh mount
    namespace each time, as an operator's successive commands get."""
    return run(IP, "netns", "exec", ns, CLI, *argv, timeout=120)


def explain(proc: subprocess.CompletedProcess[str]) -> str:
    return (f"argv {proc.args}\nexit {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")


def test_host_made_in_one_ip_netns_exec_serves_the_next() -> None:
    ns = f"snvt-{uuid.uuid4().hex[:8]}"
    run(IP, "netns", "add", ns).check_returncode()
    run(IP, "netns", "exec", ns, IP, "link", "set", "lo", "up").check_returncode()
    target = short_tmpdir()
    port = str(uuid.uuid4())
    destroyed = None
    try:
        created = cli_in_netns(ns, "sim", "create", "--dir", target, "--pfs", "1",
                               "--vfs-per-pf", "2")
        assert created.returncode == 0, explain(created)
        host = SimulatedHost.load(target)
        config = ("--config-file", host.config_file)
        before = {vf.address: vf.driver for vf in discover(target).pfs[0].vfs}

        attached = cli_in_netns(ns, *config, "attach", "--port-id", port,
                                "--mac", "fa:16:3e:00:16:16", "--vnic-type", "virtio-forwarder",
                                "--instance-uuid", str(uuid.uuid4()), "--json")
        assert attached.returncode == 0, explain(attached)
        vf = json.loads(attached.stdout)["vf"]
        detached = cli_in_netns(ns, *config, "detach", "--port-id", port)
        assert detached.returncode == 0, explain(detached)

        status = cli_in_netns(ns, *config, "status", "--json")
        assert status.returncode == 0, explain(status)
        assert json.loads(status.stdout)["ports"] == []
        assert {v.address: v.driver for v in discover(target).pfs[0].vfs} == before
        state = host.kernel_state(vf)
        assert state["mac"] == "00:00:00:00:00:00"
        # The VF's netdev is back, with its own MAC, in its namespace, which
        # this process (another mount namespace again) can open by name.
        link = link_in_ns(host.vf_namespace(vf), host.vf_netdev(vf))
        assert link is not None and link["mac"] == state["netdev_mac"]
    finally:
        if os.path.exists(os.path.join(target, MANIFEST)):
            destroyed = cli_in_netns(ns, "sim", "destroy", "--dir", target)
        run(IP, "netns", "del", ns)
        shutil.rmtree(target, ignore_errors=True)
    assert destroyed is not None and destroyed.returncode == 0, explain(destroyed)
    assert namespaces_with_prefix(f"sn{host.layout.sim_id}") == []


def test_hosts_in_namespaces_of_their_own_run_side_by_side() -> None:
    """own_netns: two hosts with userspace OVS at once, made from one
    namespace (which holds neither's links nor OVS taps); each host's
    representors and OVS are in its own ``sn<id>-host``, a CLI command run
    there serves it, and destroy takes the namespace away with the rest."""
    hosts: list[SimulatedHost] = []
    try:
        with isolated_netns():
            for _ in range(2):
                hosts.append(create_host(pfs=1, vfs_per_pf=2, with_ovs=True, own_netns=True))
            first, second = hosts
            pids = []
            for host in hosts:
                # A userspace bridge makes each OVS open its datapath's
                # ovs-netdev tap: one per namespace.
                with OvsdbClient(host.layout.ovsdb_connection, 10) as client:
                    client.ensure_bridge("br-int", "netdev")
                ovsdb.close_connection(host.layout.ovsdb_connection)
                own = f"sn{host.layout.sim_id}-host"
                assert host.layout.host_netns == own
                assert own in host.existing_namespaces()
                assert host.existing_links() == sorted(host.layout.links())
                assert link_in_ns(own, "ovs-netdev") is not None
                assert set(host.processes()) == {"ovsdb-server", "ovs-vswitchd"}
                pids += list(host.processes().values())
            assert links_with_prefix("sn") == [] and links_with_prefix("ovs-netdev") == []
            # The manifest records it: a host loaded elsewhere finds its links.
            assert SimulatedHost.load(first.dir).existing_links() == first.existing_links()
            vf = discover(second.dir).pfs[0].vfs[0]
            with second.inside():
                listed = run(CLI, "--config-file", second.config_file, "inventory", "--json")
            assert listed.returncode == 0, explain(listed)
            assert vf.representor is not None and vf.representor.name in listed.stdout
            second.reboot()  # in its own namespace, where its links are
            assert second.existing_links() == sorted(second.layout.links())
            for host in hosts:
                host.destroy()
                assert_nothing_left(host.layout.sim_id, host.dir, pids)
            first.destroy()  # again: nothing to do
    finally:
        for host in hosts:
            destroy_host(host)
