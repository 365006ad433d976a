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
                 "no claim left in the state store", "no network namespace left"):
        assert f"[ok] {what}" in out
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

    # What the demo made: its directory and simulator id, from its own output.
    sim_dir = re.search(r"creating a simulated SmartNIC host in (/tmp/\S+)", out)
    sim_id = re.search(r"\bsn([0-9a-f]{4})p0r0\b", out)
    assert sim_dir and sim_id, out
    assert not os.path.exists(sim_dir[1])
    # No representor, uplink, tap or veth left in the namespace it ran in...
    assert links_after == []
    # ...no namespace of its (VF ends, the wire, the normal port's "VM")...
    prefix = f"sn{sim_id[1]}"
    assert [ns for ns in netns.listnetns() if ns.startswith(prefix)] == []
    # ...and none of its processes: the OVS daemons and the forwarder simulator
    # it started (it prints their pids), nor any other running from its directory.
    started = re.search(r"processes: (\{.*\})", out)
    assert started, out
    pids = {int(p) for p in re.findall(r"'[a-z-]+': (\d+)", started[1])}
    assert len(pids) == 3, started[1]
    running = _live_processes()
    assert {pid: running[pid] for pid in pids & set(running)} == {}
    assert [c for c in running.values() if sim_dir[1] in c] == []
