"""``doctor``'s offload checks, end to end, on a simulated SmartNIC host.

The host is made with ``smartnic-vif sim create`` in a network namespace of
its own (one userspace OVS per namespace); every command runs as its own
process, argv lists, no shell. A fresh host offloads, as a SmartNIC host set
up for it does: OVS ``hw-offload=true``, every representor's
``hw-tc-offload`` on, switchdev PFs in switchdev mode. Each check is then made
to fail, by ``sim set-offload`` or by editing OVSDB, and must say how to fix
it; each test puts the host back.

The reading code itself is checked against the kernel: the features of a
veth read through ethtool's netlink interface must be what ``ethtool -k``
shows (the production code never runs ``ethtool``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from smartnic_vif.host import offload
from smartnic_vif.sim.host import SimulatedHost
from tests.fixtures.plugin import private_network_namespace

pytestmark = pytest.mark.root

CLI = os.path.join(os.path.dirname(sys.executable), "smartnic-vif")
OVS_VSCTL = shutil.which("ovs-vsctl") or "/usr/bin/ovs-vsctl"
ETHTOOL = shutil.which("ethtool") or "/usr/sbin/ethtool"
IP = shutil.which("ip") or "/usr/sbin/ip"
PF0, PF1 = "0000:05:00.0", "0000:05:00.1"
OFFLOAD_CHECKS = ["hw_offload", "tc_policy", "hw_tc_offload", "eswitch_mode"]


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60,  # noqa: S603
                          check=False)


def explain(proc: subprocess.CompletedProcess[str]) -> str:
    return f"argv {proc.args}\nexit {proc.returncode}\nstdout:\n{proc.stdout}\n" \
           f"stderr:\n{proc.stderr}"


class Host:
    def __init__(self, dir: str) -> None:
        self.dir = dir
        self.config = os.path.join(dir, "smartnic-vif.conf")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run(CLI, "--config-file", self.config, *args)

    def sim(self, *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        proc = run(CLI, "sim", args[0], "--dir", self.dir, *args[1:])
        assert proc.returncode == expect, explain(proc)
        return proc

    def vsctl(self, *args: str) -> str:
        proc = run(OVS_VSCTL, f"--db=unix:{self.dir}/ovs/db.sock", "--timeout=10", *args)
        assert proc.returncode == 0, explain(proc)
        return proc.stdout

    def doctor(self) -> dict[str, dict[str, Any]]:
        """The offload checks of ``doctor --json``, by name (in doctor's order)."""
        proc = self.cli("doctor", "--json")
        data = json.loads(proc.stdout)
        assert proc.returncode == (0 if data["ok"] else 1), explain(proc)
        return {c["check"]: c for c in data["checks"] if c["check"] in OFFLOAD_CHECKS}

    def attach(self, vnic_type: str) -> tuple[str, str, str]:
        """(port id, VF, OVS port) of a new port."""
        port_id = str(uuid.uuid4())
        proc = self.cli("attach", "--port-id", port_id, "--mac",
                        f"fa:16:3e:0f:{uuid.uuid4().hex[:2]}:{uuid.uuid4().hex[:2]}",
                        "--vnic-type", vnic_type, "--instance-uuid", str(uuid.uuid4()), "--json")
        assert proc.returncode == 0, explain(proc)
        ports = self.vsctl("--bare", "--columns=name", "find", "Interface",
                           f"external_ids:iface-id={port_id}").split()
        vf = json.loads(proc.stdout)["vf"]
        return port_id, vf, ports[0]


@pytest.fixture(scope="module")
def host() -> Iterator[Host]:
    with private_network_namespace():
        dir = tempfile.mkdtemp(prefix="snv-", dir="/tmp")
        try:
            proc = run(CLI, "sim", "create", "--dir", dir, "--pfs", "2", "--vfs-per-pf", "4",
                       "--legacy-pfs", "1")
            assert proc.returncode == 0, explain(proc)
            h = Host(dir)
            h.vsctl("--may-exist", "add-br", "br-int", "--", "set", "Bridge", "br-int",
                    "datapath_type=netdev")
            yield h
        finally:
            if os.path.exists(os.path.join(dir, "sim.json")):
                with contextlib.suppress(Exception):
                    SimulatedHost.load(dir).destroy()
            shutil.rmtree(dir, ignore_errors=True)


@pytest.fixture(scope="module")
def plugged(host: Host) -> Iterator[list[tuple[str, str, str]]]:
    """A passthrough and a forwarder port, plugged for the module."""
    ports = [host.attach("direct"), host.attach("virtio-forwarder")]
    yield ports
    for port_id, _, _ in ports:
        proc = host.cli("detach", "--port-id", port_id)
        assert proc.returncode == 0, explain(proc)


@pytest.fixture
def restore(host: Host) -> Iterator[None]:
    yield
    host.sim("set-offload", "--on")
    host.vsctl("remove", "Open_vSwitch", ".", "other_config", "tc-policy")


def test_a_fresh_simulated_host_offloads(host: Host,
                                         plugged: list[tuple[str, str, str]]) -> None:
    checks = host.doctor()
    assert list(checks) == OFFLOAD_CHECKS
    assert all(c["ok"] and c["fix"] is None for c in checks.values()), checks
    assert checks["hw_offload"]["detail"] == "OVS other_config:hw-offload=true"
    assert checks["tc_policy"]["detail"].startswith("OVS tc-policy none (not set)")
    assert checks["hw_tc_offload"]["detail"] == (
        "hw-tc-offload on for the 2 representors plugged on OVS")
    # The legacy PF has no representors: only the switchdev ones are asked.
    assert checks["eswitch_mode"]["detail"] == (
        f"devlink eswitch mode: {PF0} switchdev, {PF1} switchdev")
    state = SimulatedHost.load(host.dir).offload_state()
    assert state["eswitch_mode"]["0000:81:00.0"] == "legacy"


def test_ovs_hw_offload_off(host: Host, plugged: Any, restore: None) -> None:
    host.sim("set-offload", "--off", "--ovs")
    assert "hw-offload" not in host.vsctl("get", "Open_vSwitch", ".", "other_config")
    checks = host.doctor()
    assert not checks["hw_offload"]["ok"]
    assert checks["hw_offload"]["detail"] == "OVS other_config:hw-offload is not set (offload off)"
    assert checks["hw_offload"]["fix"].startswith(
        "ovs-vsctl set Open_vSwitch . other_config:hw-offload=true, then restart ovs-vswitchd")
    # Only that check fails.
    assert [n for n, c in checks.items() if not c["ok"]] == ["hw_offload"]
    host.vsctl("set", "Open_vSwitch", ".", "other_config:hw-offload=false")
    assert host.doctor()["hw_offload"]["detail"] == (
        "OVS other_config:hw-offload=false (offload off)")
    # The text output says how to fix it.
    text = host.cli("doctor")
    assert text.returncode == 1, explain(text)
    assert "[FAIL] hw_offload: OVS other_config:hw-offload=false" in text.stdout
    assert "       fix: ovs-vsctl set Open_vSwitch . other_config:hw-offload=true" in text.stdout


def test_tc_policy_skip_hw(host: Host, plugged: Any, restore: None) -> None:
    host.vsctl("set", "Open_vSwitch", ".", "other_config:tc-policy=skip_hw")
    checks = host.doctor()
    assert not checks["tc_policy"]["ok"]
    assert checks["tc_policy"]["detail"] == "OVS tc-policy skip_hw: flows never go to the NIC"
    assert checks["tc_policy"]["fix"].startswith(
        "ovs-vsctl set Open_vSwitch . other_config:tc-policy=none")
    host.vsctl("set", "Open_vSwitch", ".", "other_config:tc-policy=skip_sw")
    assert host.doctor()["tc_policy"]["ok"]


def test_representor_without_hw_tc_offload(host: Host, plugged: list[tuple[str, str, str]],
                                           restore: None) -> None:
    (_, vf0, rep0), (_, vf1, rep1) = plugged
    # A representor that is not on OVS does not count.
    unplugged = next(a for a in ("0000:05:08.3", "0000:05:09.3") if a not in (vf0, vf1))
    host.sim("set-offload", "--off", "--vf", unplugged)
    assert host.doctor()["hw_tc_offload"]["ok"]
    host.sim("set-offload", "--off", "--vf", vf1)
    checks = host.doctor()
    check = checks["hw_tc_offload"]
    assert not check["ok"]
    assert check["detail"] == (f"1/2 representors plugged on OVS do not offload: "
                               f"{rep1} (VF {vf1}): hw-tc-offload off")
    assert check["fix"] == f"ethtool -K {rep1} hw-tc-offload on"
    assert [n for n, c in checks.items() if not c["ok"]] == ["hw_tc_offload"]


def test_pf_not_in_switchdev_mode(host: Host, plugged: Any, restore: None) -> None:
    host.sim("set-offload", "--off", "--pf", PF1)
    checks = host.doctor()
    check = checks["eswitch_mode"]
    assert not check["ok"]
    assert check["detail"] == (f"devlink eswitch mode: {PF0} switchdev, {PF1} legacy; "
                               "offload needs switchdev")
    assert check["fix"] == f"devlink dev eswitch set pci/{PF1} mode switchdev"
    assert [n for n, c in checks.items() if not c["ok"]] == ["eswitch_mode"]


def test_everything_off_then_on(host: Host, plugged: Any, restore: None) -> None:
    host.sim("set-offload", "--off")
    checks = host.doctor()
    assert [n for n, c in checks.items() if not c["ok"]] == [
        "hw_offload", "hw_tc_offload", "eswitch_mode"]
    assert checks["hw_tc_offload"]["detail"].startswith(
        "2/2 representors plugged on OVS do not offload")
    host.sim("set-offload", "--on")
    assert all(c["ok"] for c in host.doctor().values())


def test_without_ovsdb_only_the_eswitch_is_checked(host: Host, plugged: Any,
                                                   tmp_path: Any) -> None:
    extra = tmp_path / "no-ovsdb.conf"
    extra.write_text(f"[os_vif_smartnic]\novsdb_connection = unix:{tmp_path}/none.sock\n")
    proc = host.cli("--config-file", str(extra), "doctor", "--json")
    assert proc.returncode == 1, explain(proc)
    names = [c["check"] for c in json.loads(proc.stdout)["checks"]]
    assert "ovsdb" in names and "eswitch_mode" in names
    assert not {"hw_offload", "tc_policy", "hw_tc_offload"} & set(names)


def test_set_offload_refuses_bad_input(host: Host) -> None:
    before = SimulatedHost.load(host.dir).offload_state()
    proc = host.sim("set-offload", "--off", "--vf", "0000:81:08.0", expect=2)
    assert "--vf 0000:81:08.0: not a switchdev VF of the simulated host" in proc.stderr
    proc = host.sim("set-offload", "--off", "--pf", "0000:81:00.0", expect=2)
    assert "--pf 0000:81:00.0: not a switchdev PF" in proc.stderr
    proc = host.sim("set-offload", "--off", "--ovs", "--vf", "0000:05:08.0", expect=2)
    assert "--vf is for --representors, which is not given" in proc.stderr
    host.sim("set-offload", expect=2)  # --on or --off is required
    assert SimulatedHost.load(host.dir).offload_state() == before


def test_sim_create_without_hw_offload(sim_host: Any) -> None:
    h = sim_host(pfs=1, vfs_per_pf=2, with_ovs=True, hw_offload=False)
    checks = Host(h.dir).doctor()
    assert not checks["hw_offload"]["ok"]
    assert checks["eswitch_mode"]["ok"] and checks["hw_tc_offload"]["ok"]


# -- the reads against the kernel -----------------------------------------------------
@pytest.fixture
def veth() -> Iterator[str]:
    with private_network_namespace():
        proc = run(IP, "link", "add", "offl-a", "type", "veth", "peer", "name", "offl-b")
        assert proc.returncode == 0, explain(proc)
        yield "offl-a"


def ethtool_k(ifname: str) -> dict[str, str]:
    """``ethtool -k``'s lines: name -> "on", "off [fixed]", ..."""
    proc = run(ETHTOOL, "-k", ifname)
    assert proc.returncode == 0, explain(proc)
    shown = {}
    for line in proc.stdout.splitlines()[1:]:
        name, _, value = line.strip().partition(": ")
        shown[name] = value
    return shown


def test_features_read_through_netlink_are_what_ethtool_shows(veth: str) -> None:
    with offload.GenericNetlink() as nl:
        features = offload.read_features(nl, veth)
    shown = ethtool_k(veth)
    # ethtool prints kernel feature names (and a few legacy group names).
    compared = [n for n in shown if n in features]
    assert len(compared) > 20, (shown, features)
    for name in compared:
        assert features[name].describe() == shown[name], name
    assert offload.feature(features, offload.HW_TC_OFFLOAD).describe() == shown["hw-tc-offload"]
    # A veth cannot offload tc flows: what the simulated host stands in for.
    assert shown["hw-tc-offload"] == "off [fixed]"
    assert offload.LinuxOffload().hw_tc_offload(veth, "0000:05:08.0").describe() == "off [fixed]"


def test_reads_of_what_is_not_there(veth: str) -> None:
    with offload.GenericNetlink() as nl:
        with pytest.raises(offload.OffloadReadError, match="netdev offl-none does not exist"):
            offload.read_features(nl, "offl-none")
        # This machine has no devlink device for the PF (or no devlink at all).
        with pytest.raises(offload.OffloadReadError, match="devlink pci/0000:05:00.0: ") as e:
            offload.read_eswitch_mode(nl, "0000:05:00.0")
    assert e.value.code in (errno.ENODEV, errno.ENOENT)
