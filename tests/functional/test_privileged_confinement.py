"""The privileged helper stays inside the tree its own configuration names,
whatever a caller that is not root passes or has planted in that tree.

Each test runs ``tests.fixtures.unprivileged`` in a subprocess: root forks
the real helper there (configured for one simulated host), then the process
drops to uid nobody for good and makes the calls. Everything outside the
simulated host's tree (a root-owned "victim" directory, a network device in
this namespace) must come out unchanged, and refused calls must leave the
VF as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from smartnic_vif.host.discovery import discover
from smartnic_vif.host.kernel import SIM_STATE_DIR
from smartnic_vif.host.netdev import get_link
from smartnic_vif.sim.host import SimulatedHost
from tests.fixtures.sim import create_host, destroy_host

pytestmark = pytest.mark.root

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIM = "simulated"


def run_unprivileged(sysfs_root: str, backend: str, calls: list[Any],
                     overrides: list[Any] | None = None) -> list[Any]:
    """The outcome of each call, made by uid nobody through a helper that
    root forked with ``sysfs_root`` and ``backend`` as its configuration."""
    spec = json.dumps({"sysfs_root": sysfs_root, "kernel_backend": backend, "calls": calls,
                       "overrides": overrides or []})
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "tests.fixtures.unprivileged", spec],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    outcomes: list[Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return outcomes


def tree(path: str) -> list[tuple[str, str, str]]:
    """Everything under ``path``: (relative path, kind, contents or link target)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(path):
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, path)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                found.append((rel, "link", os.readlink(full)))
            elif stat.S_ISDIR(st.st_mode):
                found.append((rel, "dir", oct(st.st_mode)))
            else:
                with open(full, "rb") as f:
                    found.append((rel, "file", f.read().decode(errors="replace")))
    return sorted(found)


@pytest.fixture
def victim() -> Iterator[str]:
    """A root-owned directory outside every simulated tree."""
    path = tempfile.mkdtemp(prefix="snv-victim-", dir="/tmp")
    os.makedirs(os.path.join(path, "secret"))
    with open(os.path.join(path, "secret", "data"), "w") as f:
        f.write("root's own\n")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def host() -> Iterator[SimulatedHost]:
    h = create_host(pfs=2, vfs_per_pf=4)
    try:
        yield h
    finally:
        destroy_host(h)


@pytest.fixture
def victim_link() -> Iterator[str]:
    """A network device in this namespace that no simulated VF owns."""
    name = f"snvv{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", name + "p"],  # noqa: S603, S607
                   check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "link", "del", name], check=False)  # noqa: S603, S607


def state_path(host: SimulatedHost, address: str) -> str:
    return os.path.join(host.dir, SIM_STATE_DIR, "vfs", address + ".json")


def rewrite_state(host: SimulatedHost, address: str, **changes: Any) -> None:
    path = state_path(host, address)
    with open(path) as f:
        state = json.load(f)
    state.update(changes)
    with open(path, "w") as f:
        json.dump(state, f)


def test_a_caller_cannot_point_the_helper_at_a_tree_of_its_own(
    host: SimulatedHost, victim: str
) -> None:
    # The caller's own copy of a simulated tree, whose VF "has" a netdev that
    # is really a root-owned directory elsewhere. The helper used to take
    # the root from the call and move that directory into the caller's tree.
    vf = discover(host.dir).pfs[0].vfs[0].address
    own = tempfile.mkdtemp(prefix="snv-own-", dir="/tmp")
    try:
        for part in ("sys", SIM_STATE_DIR):
            shutil.copytree(os.path.join(host.dir, part), os.path.join(own, part), symlinks=True)
        with open(os.path.join(own, SIM_STATE_DIR, "vfs", vf + ".json")) as f:
            state = json.load(f)
        state["netdev"] = os.path.join(victim, "secret")
        with open(os.path.join(own, SIM_STATE_DIR, "vfs", vf + ".json"), "w") as f:
            json.dump(state, f)
        subprocess.run(["chown", "-R", "nobody:nogroup", own], check=True)  # noqa: S603, S607
        # The helper has no CAP_DAC_OVERRIDE: the caller lets it in.
        subprocess.run(["chmod", "-R", "a+rwX", own], check=True)  # noqa: S603, S607
        before = tree(victim)

        [bind, set_vf] = run_unprivileged(host.dir, SIM, [
            ["bind_driver", [[own, SIM, vf, "vfio-pci"]]],
            ["set_vf", [[own, SIM, "0000:05:00.0", 0, {"vlan": 5}]]],
        ])
        assert tree(victim) == before
        # Neither a root nor a backend is an argument any more.
        assert bind[:2] == ["error", "TypeError"], bind
        assert set_vf[:2] == ["error", "TypeError"], set_vf
    finally:
        shutil.rmtree(own, ignore_errors=True)


def test_hostile_names_and_symlinks_in_the_tree_are_refused(
    host: SimulatedHost, victim: str, victim_link: str
) -> None:
    root = host.dir
    vfs = [vf for pf in discover(root).pfs for vf in pf.vfs]
    absolute, relative, class_net, state_link, device_link, netns_vf, fine = (
        vf.address for vf in vfs[1:8])
    netns_pf = vfs[6]
    drivers = {a: discover(root).vf(a).driver for a in (absolute, relative, class_net)}
    # Names read from the tree's JSON: a path instead of a netdev name.
    rewrite_state(host, absolute, netdev=os.path.join(victim, "secret"))
    dev_net = os.path.realpath(os.path.join(root, "sys", "bus", "pci", "devices", relative, "net"))
    rewrite_state(host, relative, netdev=os.path.relpath(os.path.join(victim, "secret"), dev_net))
    # ... and a namespace name that leaves /var/run/netns, with a device outside the sim.
    rewrite_state(host, netns_vf, netdev=victim_link, netns="../../proc/1/ns/net")
    # Symlinks inside the tree that lead out of it.
    os.makedirs(os.path.join(victim, "class-net"))
    class_entry = os.path.join(victim, "class-net", host.vf_netdev(class_net))
    with open(class_entry, "w") as f:
        f.write("not the sim's\n")
    class_dir = os.path.join(root, "sys", "class", "net")
    os.rename(class_dir, class_dir + ".real")
    os.symlink(os.path.join(victim, "class-net"), class_dir)
    shutil.copy(state_path(host, state_link), os.path.join(victim, "state.json"))
    os.unlink(state_path(host, state_link))
    os.symlink(os.path.join(victim, "state.json"), state_path(host, state_link))
    bus_entry = os.path.join(root, "sys", "bus", "pci", "devices", device_link)
    shutil.copytree(os.path.realpath(bus_entry), os.path.join(victim, "device"), symlinks=True)
    os.unlink(bus_entry)
    os.symlink(os.path.join(victim, "device"), bus_entry)

    states = {a: host.kernel_state(a) for a in (absolute, relative, netns_vf)}
    victim_before = tree(victim)
    link_before = get_link(victim_link)
    try:
        outcomes = run_unprivileged(root, SIM, [
            ["bind_driver", [[absolute, "vfio-pci"], [root, SIM, absolute, "vfio-pci"]]],
            ["bind_driver", [[relative, "vfio-pci"], [root, SIM, relative, "vfio-pci"]]],
            ["bind_driver", [[class_net, "vfio-pci"], [root, SIM, class_net, "vfio-pci"]]],
            ["bind_driver", [[state_link, "vfio-pci"], [root, SIM, state_link, "vfio-pci"]]],
            ["bind_driver", [[device_link, "vfio-pci"], [root, SIM, device_link, "vfio-pci"]]],
            ["set_vf", [[netns_pf.pf_address, netns_pf.index, {"mac": "fa:16:3e:66:66:66"}],
                        [root, SIM, netns_pf.pf_address, netns_pf.index,
                         {"mac": "fa:16:3e:66:66:66"}]]],
        ])
        # Everything outside the tree is as it was.
        assert tree(victim) == victim_before
        assert get_link(victim_link) == link_before
    finally:
        os.unlink(class_dir)
        os.rename(class_dir + ".real", class_dir)
        os.unlink(bus_entry)
        os.symlink(os.path.relpath(os.path.join(root, "sys", "devices", "pci0000:00",
                                                device_link), os.path.dirname(bus_entry)),
                   bus_entry)
    for outcome in outcomes:
        assert outcome[0] == "error" and outcome[1] != "TypeError", outcome
    assert "netdev" in outcomes[0][2] and "netdev" in outcomes[1][2]
    assert "netns" in outcomes[5][2]
    for outcome in outcomes[2:5]:
        assert "outside" in outcome[2], outcome
    # What the helper is for still works for this caller, in the repaired tree.
    assert run_unprivileged(root, SIM, [
        ["bind_driver", [[fine, "vfio-pci"], [root, SIM, fine, "vfio-pci"]]],
        ["bind_driver", [[fine, "nfp"], [root, SIM, fine, "nfp"]]],
    ]) == [["ok", "nfp"], ["ok", "vfio-pci"]]
    # The refused VFs were left as they were: nothing half done.
    assert {a: discover(root).vf(a).driver for a in drivers} == drivers
    assert {a: host.kernel_state(a) for a in states} == states


@pytest.mark.parametrize(("overrides", "field", "reason"), [
    ([["os_vif_smartnic", "sysfs_root", "/etc"], ["os_vif_agilio_ovs", "sysfs_root", "/etc"]],
     "[os_vif_smartnic] sysfs_root", "not a sysfs tree"),
    ([["os_vif_smartnic", "sysfs_root", "/"]],
     "[os_vif_smartnic] sysfs_root and [os_vif_agilio_ovs] sysfs_root", "differently"),
    ([["os_vif_agilio_ovs", "kernel_backend", "linux"]],
     "[os_vif_smartnic] kernel_backend and [os_vif_agilio_ovs] kernel_backend", "differently"),
])
def test_the_helper_refuses_a_configuration_it_cannot_trust(
    host: SimulatedHost, overrides: list[Any], field: str, reason: str
) -> None:
    vf = discover(host.dir).pfs[0].vfs[0]
    before = host.kernel_state(vf.address)
    [outcome] = run_unprivileged(host.dir, SIM, [["bind_driver", [[vf.address, "vfio-pci"]]]],
                                 overrides)
    assert outcome[:2] == ["error", "PortableInvalidValue"], outcome
    assert outcome[2].startswith(f"invalid {field} ") and reason in outcome[2], outcome
    assert host.kernel_state(vf.address) == before


def test_a_tree_others_may_write_is_refused(host: SimulatedHost) -> None:
    vf = discover(host.dir).pfs[0].vfs[0]
    os.chmod(host.dir, 0o777)
    try:
        [outcome] = run_unprivileged(host.dir, SIM, [["bind_driver", [[vf.address, "vfio-pci"]]]])
    finally:
        os.chmod(host.dir, 0o700)
    assert outcome[:2] == ["error", "PortableInvalidValue"], outcome
    assert "no one else may write" in outcome[2]
    assert discover(host.dir).vf(vf.address).driver == "nfp"
