"""``smartnic-vif demo`` end to end, and that it leaves nothing behind.

The demo makes (and destroys) a simulated host of its own, with a userspace
OVS; only one of those fits in a network namespace, so this module uses no
simulated-host fixture (test_cli's is module-scoped and gone by now) and runs
the demo in a network namespace of its own, where no other simulated host on
this machine can meet it. What the demo made is recognised by its simulator id
(every link and namespace it makes is named ``sn<id>...``) and its directory.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from pyroute2 import IPRoute, netns

from tests.fixtures.plugin import private_network_namespace

pytestmark = pytest.mark.root

CLI = os.path.join(os.path.dirname(sys.executable), "smartnic-vif")


def _live_processes() -> dict[int, str]:
    """pid -> command line of every live (not zombie) process."""
    found = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if stat[stat.rindex(")") + 2] != "Z":
            found[int(pid)] = cmdline
    return found


def _sn_links() -> list[str]:
    with IPRoute() as ipr:
        return sorted(
            name for msg in ipr.get_links()
            if (name := msg.get_attr("IFLA_IFNAME")).startswith("sn")
        )


def _assert_nothing_left(out: str, links_after: list[str]) -> None:
    """Nothing of either simulated host the demo printed is left: links in
    the namespace it ran in, namespaces, processes, directories."""
    dirs = re.findall(r"(?:creating a simulated SmartNIC host in|host 2 in) (/tmp/[^\s,]+)", out)
    ids = re.findall(r"network namespace sn([0-9a-f]{4})-host", out)
    assert dirs and len(ids) == len(dirs), out
    for d in dirs:
        assert not os.path.exists(d)
    assert links_after == []
    for sim_id in ids:
        assert [ns for ns in netns.listnetns() if ns.startswith(f"sn{sim_id}")] == []
    running = _live_processes()
    pids = {int(p) for started in re.findall(r"(\{'ovsdb-server'.*?\})", out)
            for p in re.findall(r"'[a-z-]+': (\d+)", started)}
    assert len(pids) == 3 * len(dirs), out
    assert {pid: running[pid] for pid in pids & set(running)} == {}
    assert [c for c in running.values() if any(d in c for d in dirs)] == []


def test_demo_passes_and_leaves_nothing_behind() -> None:
    with private_network_namespace():
        assert _sn_links() == []
        proc = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [CLI, "demo"], capture_output=True, text=True, timeout=120
        )
        links_after = _sn_links()
    out = proc.stdout
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{proc.stderr}"
    assert re.search(r"^demo passed in [0-9.]+s$", out, re.M), out
    assert "FAIL" not in out
    for what in ("three OVS ports, one per mode", "one relay, for the virtio-forwarder port",
                 "no claim left in the state store (host 1)"):
        assert f"[ok] {what}" in out
    # The live migration: destination plug, move, source unplug; the ping
    # that ran across it says what it lost; then both hosts are clean.
    for what in ("destination plug: 'smartnic-vif attach' on host 2",
                 "the forwarder VM answered on host 1 before the move and from host 2 after it",
                 "the port's OVS port left host 1",
                 "host 2's status: no claim, no drift, no unexplained OVS port or relay",
                 "no virtio-forwarder relay left (host 2)",
                 "every representor has its name back and every VF its driver (host 2)"):
        assert f"[ok] {what}" in out
    assert re.search(r"^  \[ok\] normal VM \(host 1\) -> forwarder VM \(host 2, ", out, re.M)
    assert re.search(r"^  migration downtime: lost \d+ of \d+ pings \(10 ms apart\), "
                     r"no reply for \d+ ms across the move$", out, re.M), out
    assert out.index("destination plug (pre_live_migration)") < out.index("guest moved") \
        < out.index("source unplug (post_live_migration)")
    for host in ("host 1", "host 2"):
        for what in ("no OVS or forwarder process left", "no representor or uplink veth left",
                     "no network namespace left"):
            assert f"[ok] {what} ({host})" in out
    for what in ("the restarted daemon has no relay: the forwarder port is dead",
                 "the relay is back"):
        assert f"[ok] {what}" in out
    # After the forwarder restart and after the reboot, reconcile's repair
    # said what it did: the relay, and for both VF ports the representor's
    # name and the VF's MAC.
    assert out.count("(virtio-forwarder ADD_SOCK)") == 2
    assert out.count("-> rename representor") == 2 and out.count("-> set VF") == 2
    # Pings to the normal and forwarder VMs: at first, after the forwarder
    # restart and after the reboot.
    assert out.count("[ok] passthrough VM -> ") == 6

    _assert_nothing_left(out, links_after)


# The demo, with its guest's announcement failing: in the middle of the
# migration, with both hosts up, the link between them and the ping running.
FAILING_DEMO = """
import sys
from smartnic_vif.cli import demo, main

def announce(*args):
    raise RuntimeError("injected failure")

demo._announce = announce
sys.argv = ["smartnic-vif", "demo"]
sys.exit(main.main())
"""


def test_demo_failing_midway_leaves_nothing_behind() -> None:
    with private_network_namespace():
        proc = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [sys.executable, "-c", FAILING_DEMO], capture_output=True, text=True, timeout=120)
        links_after = _sn_links()
    out = proc.stdout
    assert proc.returncode == 1, f"exit {proc.returncode}\n{out}\n{proc.stderr}"
    assert "injected failure" in proc.stderr
    assert "destination plug (pre_live_migration)" in out and "guest moved" not in out
    assert re.search(r"^demo FAILED in [0-9.]+s$", out, re.M), out
    _assert_nothing_left(out, links_after)
