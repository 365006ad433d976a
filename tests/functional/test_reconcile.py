"""``smartnic-vif reconcile`` repairing plugged ports, and ``reconcile --watch``.

The CLI runs as its own process against one simulated host (the fixtures of
``test_cli``: 2 switchdev PFs x 8 VFs, private OVS, forwarder simulator, in a
network namespace of the module's own). Drift is made behind the CLI's back,
the way it happens on a real host: a virtio-forwarder restart (relays are
kept only in the daemon's memory), VF settings or driver changed, the
representor back at its kernel name or down or with another MTU, the OVS port
deleted or its external_ids changed. Every test leaves the host as it found it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pyroute2 import NetNS

from smartnic_vif.host import kernel
from smartnic_vif.sim.host import stop_pid
from tests.functional import test_cli
from tests.functional.test_cli import IP, Sim, explain, new_id, new_mac, run, tap_name

pytestmark = pytest.mark.root

# test_cli's fixtures, under the names they were defined with: the module's
# simulated host (its own here), and the cleanup after each test.
sim = test_cli.sim
leave_no_claim = test_cli.leave_no_claim
tap = test_cli.tap

DEADLINE = 60.0  # generous: the machine is shared; nothing here asserts timings


def restart_forwarder(sim: Sim) -> None:
    """Restart the virtio-forwarder simulator: it comes back with no relay,
    as the real daemon does."""
    host = sim.host
    if hasattr(host, "restart_forwarder"):
        host.restart_forwarder()
        return
    stop_pid(os.path.join(host.layout.forwarder_dir, "forwarder.pid"))
    host._start_forwarder()


def wait_for(what: str, check: Any, deadline: float = DEADLINE) -> None:
    end = time.monotonic() + deadline
    while not check():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.1)


def vhost_of(sim: Sim, port_id: str) -> str:
    return os.path.join(sim.host.layout.vhost_dir, ("vhu" + port_id)[:14])


@contextlib.contextmanager
def vm_addresses(sim: Sim, vfs: list[str]) -> Iterator[list[str]]:
    """Give each VF's netdev (the VM's stand-in, in the VF's namespace) an
    address in one subnet; take them away afterwards."""
    made = []
    addresses = []
    try:
        for n, vf in enumerate(vfs, start=1):
            ns, dev = sim.host.vf_namespace(vf), sim.host.vf_netdev(vf)
            address = f"10.77.0.{n}"
            with NetNS(ns) as nsr:
                idx = nsr.link_lookup(ifname=dev)[0]
                nsr.addr("add", index=idx, address=address, prefixlen=24)
                nsr.link("set", index=idx, state="up")
            made.append((ns, dev, address))
            addresses.append(address)
        yield addresses
    finally:
        for ns, dev, address in made:
            with NetNS(ns) as nsr:
                idx = nsr.link_lookup(ifname=dev)[0]
                nsr.addr("del", index=idx, address=address, prefixlen=24)
                nsr.link("set", index=idx, state="down")


def pings(sim: Sim, from_vf: str, address: str) -> bool:
    ns = sim.host.vf_namespace(from_vf)
    proc = run([IP, "netns", "exec", ns, "ping", "-c", "1", "-W", "1", address], timeout=30)
    return proc.returncode == 0


def assert_dataplane(sim: Sim, vfs: list[str]) -> None:
    """Packets cross OVS between the VFs' stand-ins (the simulator relays no
    packets through virtio-forwarder: the VF's own netdev stands in for the VM)."""
    with vm_addresses(sim, vfs) as addresses:
        wait_for(f"a ping from {vfs[0]} to {addresses[1]}",
                 lambda: pings(sim, vfs[0], addresses[1]))


# -- a forwarder restart, then reconcile -------------------------------------------------
def test_reconcile_repairs_the_relays_a_forwarder_restart_forgot(sim: Sim) -> None:
    before = sim.snapshot()
    fwd = [new_id(), new_id()]
    direct = new_id()
    macs, instance = [new_mac(), new_mac()], new_id()
    vfs = [sim.attach("virtio-forwarder", p, m, instance_uuid=instance)["vf"]
           for p, m in zip(fwd, macs, strict=True)]
    direct_vf = sim.attach("direct", direct, new_mac())["vf"]
    pairs = sorted((vf, vhost_of(sim, p)) for vf, p in zip(vfs, fwd, strict=True))
    assert sim.relays() == pairs
    plugged = sim.snapshot()

    restart_forwarder(sim)
    wait_for("the restarted forwarder to publish no relay", lambda: sim.relays() == [])
    status = sim.status(expect=1)
    drifted = {p["port_id"]: p["drift"] for p in status["ports"] if p["drift"]}
    assert set(drifted) == set(fwd), status

    # Nova's path (init_host plugs every VIF again; attach does the same
    # through os-vif) repairs the port it plugs, and only that one.
    again = sim.attach("virtio-forwarder", fwd[0], macs[0], instance_uuid=instance)
    assert again["status"] == "already attached"
    assert (vfs[0], vhost_of(sim, fwd[0])) in sim.relays()
    assert (vfs[1], vhost_of(sim, fwd[1])) not in sim.relays()

    data = sim.json("reconcile")
    actions = {a["port_id"]: a for a in data["actions"]}
    # The direct port had nothing to repair, nor the one attached again.
    assert set(actions) == {fwd[1]}, data
    for port_id, vf in zip(fwd[1:], vfs[1:], strict=True):
        a = actions[port_id]
        assert a["vf"] == vf and a["action"] == "repaired 1 problem(s)", a
        [repair] = a["repairs"]
        assert repair.startswith(f"no virtio-forwarder relay pairs {vf} with "
                                 f"{vhost_of(sim, port_id)} -> relay VF {vf}"), repair
    assert sim.relays() == pairs
    assert sim.status()["drift"] is False
    assert sim.snapshot() == plugged
    # Nothing left to do: a second pass changes nothing and says so.
    assert sim.json("reconcile") == {"actions": []}
    text = sim.cli("reconcile")
    assert text.stdout.strip() == "nothing to reconcile", explain(text)
    assert_dataplane(sim, [vfs[0], direct_vf])

    for port_id in [*fwd, direct]:
        sim.json("detach", "--port-id", port_id)
    sim.assert_unchanged(before)


# -- each kind of drift --------------------------------------------------------------------
def _set_link(name: str, *args: str) -> None:
    proc = run([IP, "link", "set", name, *args])
    assert proc.returncode == 0, explain(proc)


def test_reconcile_repairs_and_reports_each_kind_of_drift(sim: Sim) -> None:
    before = sim.snapshot()
    port_id, mac, instance = new_id(), new_mac(), new_id()
    data = sim.json("attach", "--port-id", port_id, "--mac", mac, "--vnic-type",
                    "virtio-forwarder", "--instance-uuid", instance, "--mtu", "1450")
    vf = data["vf"]
    tap = tap_name(port_id)
    kernel_name = sim.vf_row(vf)["representor"]
    vhost = vhost_of(sim, port_id)
    direct = new_id()
    direct_vf = sim.attach("direct", direct, new_mac())["vf"]
    # A VF and a representor no port claims, drifted the same way: not ours.
    spare = next(r for r in sim.vf_rows if r["vf"] not in (vf, direct_vf) and r["representor"])
    sim.set_vf_state(spare["vf"], mac="fa:16:3e:ee:ee:ee", vlan=7)
    _set_link(spare["representor"], "mtu", "1300")
    spare_before = (sim.vf_state(spare["vf"]), sim.link(spare["representor"]))
    # An OVS port of someone else's on the same bridge.
    sim.vsctl("add-port", "br-int", "snv-other", "--", "set", "Interface", "snv-other",
              "type=internal", "external_ids:iface-id=not-ours")
    plugged = sim.snapshot()
    ids = sim.ovs_external_ids(tap)
    vf_title = f"set VF {sim.vf_row(vf)['vf_index']} of PF {sim.vf_row(vf)['pf']} MAC {mac}"

    def sim_bind_nfp() -> None:
        kernel.SimulatedKernel(sim.dir).bind_driver(vf, "nfp")

    def rename_back() -> None:
        _set_link(tap, "down")
        _set_link(tap, "name", kernel_name)

    rep_title = f"set representor {tap} MTU 1450, up and promiscuous"
    ovs_title = f"add {tap} to br-int as port {port_id}"
    # (kind, how to make it, [(what was wrong, what was done)] in plan order)
    kinds: list[tuple[str, Any, list[tuple[str, str]]]] = [
        ("VF MAC", lambda: sim.set_vf_state(vf, mac="fa:16:3e:ff:ff:ff"),
         [(f"VF MAC is fa:16:3e:ff:ff:ff, expected {mac}", vf_title)]),
        ("VF VLAN", lambda: sim.set_vf_state(vf, vlan=42),
         [("VF VLAN is 42, expected 0", vf_title)]),
        ("VF trust", lambda: sim.set_vf_state(vf, trust=True),
         [("VF trust is on, expected off", vf_title)]),
        ("VF spoofchk", lambda: sim.set_vf_state(vf, spoofchk=False),
         [("VF spoofchk is off, expected on", vf_title)]),
        ("driver", sim_bind_nfp,
         [("VF driver is nfp, expected vfio-pci", f"bind VF {vf} to vfio-pci")]),
        ("representor down", lambda: _set_link(tap, "down"),
         [(f"{tap} is down, expected up", rep_title)]),
        # ovs-vswitchd itself gives a port's device its mtu_request back:
        # the MTU drifts only while OVS does not have the port.
        ("representor MTU, OVS port deleted", lambda: (
            sim.vsctl("del-port", "br-int", tap), _set_link(tap, "mtu", "1400")),
         [(f"{tap} has MTU 1400, expected 1450", rep_title),
          (f"OVS port {tap} is missing from br-int", ovs_title)]),
        # What a reboot does: the kernel name, down.
        ("representor renamed back", rename_back,
         [(f"representor is named {kernel_name}, expected {tap}",
           f"rename representor {kernel_name} to {tap}"),
          (f"{tap} is down, expected up", rep_title)]),
        ("OVS port deleted", lambda: sim.vsctl("del-port", "br-int", tap),
         [(f"OVS port {tap} is missing from br-int", ovs_title)]),
        ("OVS external_ids", lambda: sim.vsctl(
            "set", "Interface", tap, "external_ids:attached-mac=fa:16:3e:00:00:01",
            f"external_ids:vm-uuid={new_id()}"),
         [(f"OVS port {tap} external_ids:attached-mac is fa:16:3e:00:00:01, expected {mac}",
           ovs_title)]),
        ("relay removed", lambda: _remove_relay(sim, vf, vhost),
         [(f"no virtio-forwarder relay pairs {vf} with {vhost}", f"relay VF {vf} to {vhost}")]),
    ]
    try:
        for kind, drift, expected in kinds:
            drift()
            if "external_ids" in kind:
                assert sim.ovs_external_ids(tap) != ids
            else:
                assert sim.snapshot() != plugged, kind
            [action] = sim.json("reconcile")["actions"]
            assert (action["port_id"], action["vf"]) == (port_id, vf), kind
            repairs = action["repairs"]
            assert len(repairs) == len(expected), (kind, repairs)
            for got, (problem, done) in zip(repairs, expected, strict=True):
                # What was wrong first (OVS may notice more, e.g. flags it
                # restored when the device went), then what was done.
                assert got.startswith(problem) and f" -> {done}" in got, (kind, got)
            assert action["action"] == f"repaired {len(expected)} problem(s)", kind
            assert sim.snapshot() == plugged, kind
            assert sim.ovs_external_ids(tap) == ids, kind
            assert sim.status()["drift"] is False, kind
            assert (sim.vf_state(spare["vf"]), sim.link(spare["representor"])) == spare_before
        # Text output: each repair on its own line.
        sim.set_vf_state(vf, vlan=3)
        text = sim.cli("reconcile")
        assert text.returncode == 0, explain(text)
        assert text.stdout.splitlines() == [
            f"port {port_id} (VF {vf}): repaired 1 problem(s)",
            f"  - VF VLAN is 3, expected 0 -> {vf_title}, VLAN 0, trust off, spoofchk on",
        ], explain(text)
        assert sim.snapshot() == plugged
        assert_dataplane(sim, [vf, direct_vf])
    finally:
        sim.vsctl("--if-exists", "del-port", "br-int", "snv-other")
        sim.set_vf_state(spare["vf"], mac=before["vfs"][spare["vf"]][0]["mac"], vlan=0)
        _set_link(spare["representor"], "mtu", str(before["links"][spare["representor"]][0]))
        sim.json("detach", "--port-id", port_id)
        sim.json("detach", "--port-id", direct)
    sim.assert_unchanged(before)


def _remove_relay(sim: Sim, vf: str, vhost: str) -> None:
    from smartnic_vif.host.forwarder.client import ForwarderClient

    layout = sim.host.layout
    with ForwarderClient(layout.port_control_endpoint, layout.stats_endpoint, 5.0) as fwd:
        fwd.remove_sock(vf, vhost)


def test_status_shows_every_drift_that_reconcile_repairs(sim: Sim) -> None:
    """status and reconcile judge drift the same way: what reconcile repairs
    (VF VLAN, trust, spoofchk, representor state, external_ids) status shows."""
    before = sim.snapshot()
    port_id, mac, instance = new_id(), new_mac(), new_id()
    vf = sim.attach("direct", port_id, mac, "--trusted", "--mtu", "1450",
                    instance_uuid=instance)["vf"]
    tap = tap_name(port_id)
    other = new_id()
    try:
        sim.set_vf_state(vf, vlan=42, trust=False, spoofchk=False)
        _set_link(tap, "down")
        sim.vsctl("set", "Interface", tap, f"external_ids:vm-uuid={other}")
        [port] = sim.status(expect=1)["ports"]
        expected = ["VF VLAN is 42, expected 0", "VF trust is off, expected on",
                    "VF spoofchk is off, expected on", f"{tap} is down, expected up",
                    f"OVS port {tap} external_ids:vm-uuid is {other}, expected {instance}"]
        for problem in expected:
            assert problem in port["drift"], (problem, port["drift"])
        [action] = sim.json("reconcile")["actions"]
        repaired = [p for r in action["repairs"] for p in r.split(" -> ")[0].split("; ")]
        assert sorted(repaired) == sorted(port["drift"]), (repaired, port["drift"])
        assert sim.status()["ports"][0]["drift"] == []
    finally:
        sim.json("detach", "--port-id", port_id)
    sim.assert_unchanged(before)


def test_reconcile_plugs_a_normal_port_again_whose_ovs_port_went(sim: Sim, tap: Any) -> None:
    """A plugged normal port is a claim too: reconcile puts its OVS port back
    (through os-vif's ovs plugin, which plugged it) and says so."""
    port_id, mac = new_id(), new_mac()
    before = sim.snapshot()
    name = tap(port_id)  # libvirt makes a normal port's tap; unplug deletes it
    sim.attach("normal", port_id, mac)
    try:
        plugged = sim.snapshot()
        ids = sim.ovs_external_ids(name)
        sim.vsctl("del-port", "br-int", name)
        [port] = sim.status(expect=1)["ports"]
        problem = f"expected one OVS port with iface-id {port_id}, found 0"
        assert port["drift"] == [problem]
        [action] = sim.json("reconcile")["actions"]
        assert (action["port_id"], action["vf"]) == (port_id, None)
        assert action["action"] == "repaired 1 problem(s)"
        [repair] = action["repairs"]
        assert repair.startswith(f"{problem} -> "), repair
        assert sim.ovs_ports(port_id) == [name]
        assert sim.ovs_external_ids(name) == ids
        assert sim.snapshot() == plugged
        assert sim.status()["drift"] is False
        # Nothing drifted: nothing to do.
        assert sim.json("reconcile")["actions"] == []
    finally:
        sim.json("detach", "--port-id", port_id)
    sim.assert_unchanged(before)


# -- watch mode ----------------------------------------------------------------------------
def test_watch_repairs_a_forwarder_restart_and_stops_on_sigterm(sim: Sim, tmp_path: Any) -> None:
    before = sim.snapshot()
    fwd = [new_id(), new_id()]
    direct = new_id()
    vfs = [sim.attach("virtio-forwarder", p, new_mac())["vf"] for p in fwd]
    direct_vf = sim.attach("direct", direct, new_mac())["vf"]
    pairs = sim.relays()
    assert len(pairs) == 2
    plugged = sim.snapshot()
    # Not in the simulated host's directory: destroy keeps what it did not make.
    log_path = os.path.join(tmp_path, "watch.log")
    with open(log_path, "w") as log:
        watch = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            sim.argv("reconcile", "--watch", "--interval", "3600"),
            stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        def logged(text: str) -> bool:
            with open(log_path) as f:
                return text in f.read()

        wait_for("the watch to start", lambda: logged("watching virtio-forwarder"))
        restart_forwarder(sim)
        wait_for("the relays to come back", lambda: sim.relays() == pairs)
        wait_for("the watch to log its repairs", lambda: logged("relay VF"))
        assert sim.status()["drift"] is False
        assert sim.snapshot() == plugged

        # OVS restarted from its database: the watch notices the reconnection
        # and repairs what the restart changed (if anything).
        from smartnic_vif.sim.ovs import PrivateOVS

        ovs = PrivateOVS(sim.host.layout.ovs_dir)
        ovs.stop()
        ovs.start()
        wait_for("the watch to see OVSDB again", lambda: logged("OVSDB connection made again"))
        wait_for("no drift", lambda: sim.cli("status").returncode == 0)
        assert_dataplane(sim, [vfs[0], direct_vf])

        # Stopping the forwarder: the watch says so, and keeps running.
        stop_pid(os.path.join(sim.host.layout.forwarder_dir, "forwarder.pid"))
        wait_for("the watch to see the forwarder gone", lambda: logged("does not answer"))
        sim.host._start_forwarder()
        wait_for("the relays to come back", lambda: sim.relays() == pairs)
        assert watch.poll() is None

        watch.send_signal(signal.SIGTERM)
        assert watch.wait(timeout=DEADLINE) == 0, open(log_path).read()
        assert logged("SIGTERM received, stopping")
        print(open(log_path).read())  # what it logged, for pytest -s
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    for port_id in [*fwd, direct]:
        sim.json("detach", "--port-id", port_id)
    sim.assert_unchanged(before)
