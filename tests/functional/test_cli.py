"""The ``smartnic-vif`` command line, end to end, on one simulated SmartNIC host.

Every command runs as its own process (the installed console script, argv
lists, no shell) with ``--config-file <sim>/smartnic-vif.conf``; its JSON is
parsed and checked against what the host really looks like afterwards: the
simulated kernel's VF state, the VF driver symlinks in the sysfs tree, the
representor links (pyroute2), the private OVS (ovs-vsctl) and the
virtio-forwarder simulator's relays.

One host (2 switchdev PFs x 8 VFs, private OVS, forwarder simulator) serves the
whole module: it is made with ``smartnic-vif sim create`` and taken down with
``smartnic-vif sim destroy`` at the end, both checked. Only one userspace OVS can
run per network namespace (its ``ovs-netdev`` tap has a fixed name), so the
module runs in a network namespace of its own (the plugin fixtures' helper):
the CLI processes it starts inherit it, and other simulated hosts on this
machine (other sessions, ``smartnic-vif demo``) cannot collide with it. Every
test leaves the host as it found it; :meth:`Sim.snapshot` is how they prove it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pyroute2 import IPRoute

from smartnic_vif.decisions.plan import Plan
from smartnic_vif.host import kernel
from smartnic_vif.host.state import StateStore
from smartnic_vif.sim.host import SimulatedHost
from tests.fixtures.plugin import private_network_namespace

pytestmark = pytest.mark.root

CLI = os.path.join(os.path.dirname(sys.executable), "smartnic-vif")
OVS_VSCTL = shutil.which("ovs-vsctl") or "/usr/bin/ovs-vsctl"
IP = shutil.which("ip") or "/usr/sbin/ip"
VIRT_XML_VALIDATE = shutil.which("virt-xml-validate")
PFS, VFS_PER_PF = 2, 8
PF0, PF1 = "0000:05:00.0", "0000:05:00.1"
# Kernel-state bookkeeping of the simulator (how often and when a driver was
# bound), not VF settings: a bind and its undo change them legitimately.
BOOKKEEPING = ("driver_changes", "last_bind")
KILL_ENV = "SMARTNIC_VIF_TEST_KILL_AFTER_STEP"
_MAC_PREFIX = secrets.randbelow(256)
_mac_counter = iter(range(1, 1 << 16))


def new_mac() -> str:
    n = next(_mac_counter)
    return f"fa:16:3e:{_MAC_PREFIX:02x}:{n >> 8:02x}:{n & 0xFF:02x}"


def new_id() -> str:
    return str(uuid.uuid4())


def tap_name(port_id: str) -> str:
    return ("tap" + port_id)[:14]


def run(argv: list[str], env: dict[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - fixed argv lists, no shell
        argv, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def smartnic_vif(*args: str, env: dict[str, str] | None = None,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``smartnic-vif ARGS`` without any config file."""
    return run([CLI, *args], env=env, timeout=timeout)


def explain(proc: subprocess.CompletedProcess[str]) -> str:
    return (f"argv {proc.args}\nexit {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")


@dataclass
class Sim:
    host: SimulatedHost
    inventory: dict[str, Any]  # ``inventory --json`` of the fresh host

    # -- running the CLI against this host ----------------------------------
    @property
    def dir(self) -> str:
        return self.host.dir

    @property
    def config(self) -> str:
        return self.host.config_file

    def argv(self, *args: str, extra_config: str | None = None) -> list[str]:
        configs = ["--config-file", self.config]
        if extra_config:
            configs += ["--config-file", extra_config]
        return [CLI, *configs, *args]

    def cli(self, *args: str, env: dict[str, str] | None = None,
            extra_config: str | None = None) -> subprocess.CompletedProcess[str]:
        return run(self.argv(*args, extra_config=extra_config), env=env)

    def json(self, *args: str, expect: int = 0, extra_config: str | None = None) -> Any:
        """Run ``ARGS --json``, assert the exit code, return the parsed output."""
        proc = self.cli(*args, "--json", extra_config=extra_config)
        assert proc.returncode == expect, explain(proc)
        try:
            return json.loads(proc.stdout)
        except ValueError:
            raise AssertionError("stdout is not JSON\n" + explain(proc)) from None

    def attach(self, vnic_type: str, port_id: str, mac: str, *extra: str,
               expect: int = 0, instance_uuid: str | None = None) -> Any:
        return self.json("attach", "--port-id", port_id, "--mac", mac, "--vnic-type", vnic_type,
                         "--instance-uuid", instance_uuid or new_id(), *extra, expect=expect)

    def status(self, expect: int = 0) -> dict[str, Any]:
        data = self.json("status", expect=expect)
        assert data["drift"] is (expect == 1), data
        return data  # type: ignore[no-any-return]

    # -- looking at the host behind the CLI's back ---------------------------
    @property
    def vf_rows(self) -> list[dict[str, Any]]:
        return list(self.inventory["vfs"])

    def vf_row(self, address: str) -> dict[str, Any]:
        return next(r for r in self.vf_rows if r["vf"] == address)

    def vf_state(self, address: str) -> dict[str, Any]:
        state = self.host.kernel_state(address)
        for key in BOOKKEEPING:
            state.pop(key, None)
        return state

    def vf_driver(self, address: str) -> str | None:
        return kernel.current_driver(self.dir, address)

    def set_vf_state(self, address: str, **changes: Any) -> None:
        """Change a VF behind the CLI's back, the way the simulated kernel
        writes its state (under its lock, atomically)."""
        with kernel.SimulatedKernel(self.dir).state(address) as state:
            state.update(changes)

    @staticmethod
    def link(name: str) -> tuple[int, bool] | None:
        """(MTU, up) of a link in this namespace, or None when there is none."""
        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=name)
            if not found:
                return None
            msg = ipr.get_links(found[0])[0]
            return msg.get_attr("IFLA_MTU"), bool(msg["flags"] & 1)

    @staticmethod
    def links() -> dict[str, tuple[int, bool]]:
        """Representors, uplinks and taps by name: (MTU, up). (OVS's own
        ovs-netdev/br-int taps follow their ports and are left out.)"""
        out = {}
        with IPRoute() as ipr:
            for msg in ipr.get_links():
                name = msg.get_attr("IFLA_IFNAME")
                if name.startswith(("sn", "tap")):
                    out[name] = (msg.get_attr("IFLA_MTU"), bool(msg["flags"] & 1))
        return out

    def vsctl(self, *args: str) -> str:
        proc = run([OVS_VSCTL, f"--db={self.host.layout.ovsdb_connection}", "--timeout=10",
                    *args])
        assert proc.returncode == 0, explain(proc)
        return proc.stdout

    def ovs_ports(self, port_id: str) -> list[str]:
        """Names of the OVS interfaces whose external_ids:iface-id is ``port_id``."""
        out = self.vsctl("--bare", "--columns=name", "find", "Interface",
                         f"external_ids:iface-id={port_id}")
        return sorted(out.split())

    def ovs_external_ids(self, name: str) -> dict[str, str]:
        out = self.vsctl("--format=json", "--columns=external_ids", "list", "Interface", name)
        pairs = json.loads(out)["data"][0][0][1]
        return dict(pairs)

    def relays(self) -> list[tuple[str, str | None]]:
        return sorted((str(r["device"]).lower(), r.get("vhost_path")) for r in self.host.relays())

    def claims(self) -> list[str]:
        return [r.port_id for r in StateStore(self.host.layout.state_path).all()]

    def snapshot(self) -> dict[str, Any]:
        """Everything a port's attach changes, for before/after comparisons."""
        return {
            "vfs": {r["vf"]: (self.vf_state(r["vf"]), self.vf_driver(r["vf"]))
                    for r in self.vf_rows},
            "links": self.links(),
            "bridges": self.vsctl("list-br").split(),
            "ovs_ports": self.vsctl("list-ports", "br-int").split(),
            "relays": self.relays(),
            "claims": self.claims(),
        }

    def assert_unchanged(self, before: dict[str, Any]) -> None:
        after = self.snapshot()
        for key in before:
            assert after[key] == before[key], f"{key} changed:\n{before[key]}\n->\n{after[key]}"


@pytest.fixture(scope="module")
def sim() -> Iterator[Sim]:
    with private_network_namespace():
        sim_dir = tempfile.mkdtemp(prefix="snv-", dir="/tmp")
        host = None
        try:
            created = smartnic_vif("sim", "create", "--dir", sim_dir, "--pfs", str(PFS),
                                   "--vfs-per-pf", str(VFS_PER_PF), "--json")
            assert created.returncode == 0, explain(created)
            info = json.loads(created.stdout)
            assert info["dir"] == sim_dir and os.path.isfile(info["config_file"])
            assert set(info["processes"]) == {"ovsdb-server", "ovs-vswitchd",
                                              "virtio-forwarder-sim"}
            assert info["representors"] == PFS * VFS_PER_PF + PFS  # and the PF uplinks
            host = SimulatedHost.load(sim_dir)
            layout = host.layout
            s = Sim(host, {})
            # A compute host has its integration bridge before any port.
            s.vsctl("--may-exist", "add-br", "br-int", "--", "set", "Bridge", "br-int",
                    "datapath_type=netdev")
            s.inventory = s.json("inventory")
            yield s
            assert s.claims() == [], "a test left a claim behind"
            destroyed = smartnic_vif("sim", "destroy", "--dir", sim_dir)
            assert destroyed.returncode == 0, explain(destroyed)
            assert "destroyed" in destroyed.stdout
            gone = SimulatedHost(layout)
            assert gone.processes() == {}
            assert gone.existing_links() == []
            assert gone.existing_namespaces() == []
            assert not os.path.exists(sim_dir)
        finally:
            if os.path.exists(os.path.join(sim_dir, "sim.json")):
                with contextlib.suppress(Exception):
                    SimulatedHost.load(sim_dir).destroy()
            shutil.rmtree(sim_dir, ignore_errors=True)


@pytest.fixture(autouse=True)
def leave_no_claim(sim: Sim) -> Iterator[None]:
    """A failed test must not fail the next ones: finish or undo what it left."""
    yield
    if sim.claims():
        sim.cli("reconcile")
        for port_id in sim.claims():
            sim.cli("detach", "--port-id", port_id)


@pytest.fixture
def tap() -> Iterator[Any]:
    """Make the tap of a normal port (a veth, as libvirt would make a tap):
    ``tap(port_id)`` -> its name; deleted after the test."""
    made: list[str] = []

    def make(port_id: str) -> str:
        name = tap_name(port_id)
        proc = run([IP, "link", "add", "name", name, "type", "veth",
                    "peer", "name", "vm" + port_id[:12]])
        assert proc.returncode == 0, explain(proc)
        made.append(name)
        return name

    yield make
    for name in made:
        run([IP, "link", "del", name])


def parse_xml(text: str) -> ET.Element:
    element = ET.fromstring(text)
    assert element.tag == "interface", text
    return element


def validate_interface(xml: str) -> None:
    """virt-xml-validate (libvirt's domain schema) on the interface in a minimal domain."""
    assert VIRT_XML_VALIDATE and shutil.which("xmllint"), "virt-xml-validate and xmllint needed"
    document = ("<domain type='kvm'><name>cli-test</name><memory unit='KiB'>1048576</memory>"
                "<os><type arch='x86_64'>hvm</type></os>"
                f"<devices>{xml}</devices></domain>")
    with tempfile.NamedTemporaryFile("w", suffix=".xml") as f:
        f.write(document)
        f.flush()
        proc = run([VIRT_XML_VALIDATE, f.name, "domain"], timeout=30)
    assert proc.returncode == 0, explain(proc) + document


def pci_of(element: ET.Element) -> str:
    a = element.find("./source/address")
    assert a is not None and a.get("type") == "pci"
    return (f"{int(a.get('domain', '0'), 16):04x}:{int(a.get('bus', '0'), 16):02x}:"
            f"{int(a.get('slot', '0'), 16):02x}.{int(a.get('function', '0'), 16):x}")


# -- inventory and pci-spec ------------------------------------------------------------
def test_inventory_lists_every_vf_with_its_representor(sim: Sim) -> None:
    inv = sim.inventory
    layout = sim.host.layout
    assert [pf["address"] for pf in inv["pfs"]] == [PF0, PF1]
    assert all(pf["num_vfs"] == VFS_PER_PF for pf in inv["pfs"])
    assert inv["sysfs_root"] == sim.dir
    rows = inv["vfs"]
    assert len(rows) == PFS * VFS_PER_PF
    assert len({r["vf"] for r in rows}) == len(rows)
    expected = {vf.address: (p, vf) for p, pf in enumerate(layout.pf_specs()) for vf in pf.vfs}
    for row in rows:
        p, spec = expected[row["vf"]]
        assert row["pf"] == (PF0, PF1)[p]
        assert row["vf_index"] == spec.index
        assert row["switchdev"] is True
        assert row["driver"] == "nfp"
        assert row["representor"] == spec.representor.name
        assert row["port_name"] == f"pf{p}vf{spec.index}"
        assert row["vendor"] == "19ee:6003"
        assert row["claimed_by"] is None
        # The representor really is a link in this namespace.
        assert sim.link(row["representor"]) is not None

    table = sim.cli("inventory")
    assert table.returncode == 0, explain(table)
    assert "CLAIMED BY" in table.stdout and "REPRESENTOR" in table.stdout
    for row in rows:
        assert row["vf"] in table.stdout and row["representor"] in table.stdout


def test_pci_spec_is_what_nova_reads(sim: Sim) -> None:
    os.environ.setdefault("OS_NOVA_DISABLE_EVENTLET_PATCHING", "1")
    import jsonschema
    from nova.pci import request as nova_request
    from nova.pci import whitelist as nova_whitelist

    pf1_netdev = sim.inventory["pfs"][1]["netdev"]
    data = sim.json("pci-spec", "--physnet-map", f"{PF0}=physnet1",
                    "--physnet-map", f"{pf1_netdev}=")
    specs = data["device_spec"]
    # 8 VFs in one slot per PF: one glob per PF.
    assert specs == [{"address": "0000:05:08.*", "physical_network": "physnet1"},
                     {"address": "0000:05:09.*"}]
    # Nova's own parser, fed the lines, tags every VF as intended.
    whitelist = nova_whitelist.Whitelist([json.dumps(s) for s in specs])
    for row in sim.vf_rows:
        dev = {"address": row["vf"], "vendor_id": "19ee", "product_id": "6003",
               "dev_type": "type-VF", "parent_addr": row["pf"]}
        spec = whitelist.device_assignable(dev)
        assert spec is not None, row["vf"]
        tags = spec.get_tags()
        if row["pf"] == PF0:
            assert tags.get("physical_network") == "physnet1", row["vf"]
        else:
            assert "physical_network" not in tags, row["vf"]
    assert data["alias"] == [{"device_type": "type-VF", "name": "smartnic-vf",
                              "product_id": "6003", "vendor_id": "19ee"}]
    for alias in data["alias"]:
        jsonschema.validate(alias, nova_request._ALIAS_SCHEMA)

    # Only the mapped PFs are exposed.
    only_pf0 = sim.json("pci-spec", "--physnet-map", f"{PF0}=physnet1")
    assert only_pf0["device_spec"] == specs[:1]

    # The text form is the nova.conf section, with the same entries.
    text = sim.cli("pci-spec", "--physnet-map", f"{PF0}=physnet1",
                   "--physnet-map", f"{pf1_netdev}=", "--alias-name", "vf")
    assert text.returncode == 0, explain(text)
    lines = text.stdout.splitlines()
    assert lines[0] == "[pci]"
    spec_lines = [ln.split(" = ", 1)[1] for ln in lines if ln.startswith("device_spec = ")]
    assert [json.loads(v) for v in spec_lines] == specs
    alias_lines = [ln.split(" = ", 1)[1] for ln in lines if ln.startswith("alias = ")]
    assert [json.loads(v)["name"] for v in alias_lines] == ["vf"]


def test_attach_selects_by_the_device_spec_it_is_given(sim: Sim, tmp_path: Any) -> None:
    """pci-spec's lines, put in pci_device_spec, decide which VF a physnet port gets."""
    specs = sim.json("pci-spec", "--physnet-map", f"{PF0}=physnet1",
                     "--physnet-map", f"{PF1}=physnet2")["device_spec"]
    extra = tmp_path / "devspec.conf"
    extra.write_text("[os_vif_smartnic]\n"
                     + "".join(f"pci_device_spec = {json.dumps(s)}\n" for s in specs))
    before = sim.snapshot()
    port_id, mac = new_id(), new_mac()
    proc = sim.cli("attach", "--port-id", port_id, "--mac", mac, "--vnic-type", "direct",
                   "--instance-uuid", new_id(), "--physnet", "physnet2", "--json",
                   extra_config=str(extra))
    assert proc.returncode == 0, explain(proc)
    vf = json.loads(proc.stdout)["vf"]
    assert sim.vf_row(vf)["pf"] == PF1
    # No VF is on physnet3: a clear failure, and nothing claimed.
    other = sim.cli("attach", "--port-id", new_id(), "--mac", new_mac(), "--vnic-type",
                    "direct", "--instance-uuid", new_id(), "--physnet", "physnet3",
                    extra_config=str(extra))
    assert other.returncode == 1, explain(other)
    assert "physnet3" in other.stderr and "Traceback" not in other.stderr
    assert sim.claims() == [port_id]
    detached = sim.json("detach", "--port-id", port_id)
    assert detached == {"port_id": port_id, "status": "detached", "vf": vf}
    sim.assert_unchanged(before)


# -- attach / detach in each vnic type ---------------------------------------------------
def test_attach_dry_run_changes_nothing(sim: Sim) -> None:
    before = sim.snapshot()
    for vnic in ("direct", "virtio-forwarder", "normal"):
        port_id, mac = new_id(), new_mac()
        data = sim.attach(vnic, port_id, mac, "--dry-run")
        assert data["dry_run"] is True
        plan = data["plan"]
        assert plan["action"] == "plug" and plan["port_id"] == port_id
        if vnic == "normal":
            assert plan["mode"] == "normal" and plan["steps"] == []
        else:
            assert plan["mode"] == ("passthrough" if vnic == "direct" else "forwarder")
            names = [s["do"]["name"] for s in plan["steps"]]
            assert "set_vf" in names and "ovs_set_port" in names
            assert ("forwarder_add" in names) is (vnic == "virtio-forwarder")
            assert ("bind_driver" in names) is (vnic == "virtio-forwarder")
            set_vf = plan["steps"][names.index("set_vf")]
            assert set_vf["do"]["args"]["settings"]["mac"] == mac
            # The plan is for the lowest free VF, whose MAC it would set.
            assert plan["vf_address"] == sim.vf_rows[0]["vf"]
        text = sim.cli("attach", "--port-id", port_id, "--mac", mac, "--vnic-type", vnic,
                       "--instance-uuid", new_id(), "--dry-run")
        assert text.returncode == 0, explain(text)
        assert f"plug port {port_id}" in text.stdout
        if vnic != "normal":
            assert f"VF {plan['vf_address']}" in text.stdout
            for step in plan["steps"]:
                assert step["title"] in text.stdout
            # Phases and lanes: the OVS transaction in a lane beside the VF's.
            ovs = names.index("ovs_set_port")
            assert [ovs] in plan["phases"][1] and len(plan["phases"][1]) == 2
            assert "  phase 2, 2 lanes at the same time:\n    lane 1:\n" in text.stdout
        assert sim.ovs_ports(port_id) == []
    sim.assert_unchanged(before)
    assert sim.status()["ports"] == []


@pytest.mark.parametrize("vnic", ["normal", "direct", "virtio-forwarder"])
def test_attach_detach_each_vnic_type(sim: Sim, tap: Any, vnic: str) -> None:
    port_id, mac, instance = new_id(), new_mac(), new_id()
    before = sim.snapshot()
    if vnic == "normal":
        tap(port_id)  # libvirt makes a normal port's tap
    args = ("attach", "--port-id", port_id, "--mac", mac, "--vnic-type", vnic,
            "--instance-uuid", instance, "--mtu", "1450")
    data = sim.json(*args)
    assert data["port_id"] == port_id and data["status"] == "attached"
    vif = data["vif"]["versioned_object.data"]
    assert vif["address"] == mac
    if vnic == "normal":
        assert vif["vif_name"] == tap_name(port_id)
    else:
        profile = vif["port_profile"]["versioned_object.data"]
        assert profile["representor_name"] == tap_name(port_id)
        assert profile["representor_address"] == data["vf"]
    xml = parse_xml(data["libvirt_xml"])
    assert xml.find("mac").get("address") == mac  # type: ignore[union-attr]
    validate_interface(data["libvirt_xml"])
    vf = data["vf"]

    # OVS: one port, named after the tap (normal) or the renamed representor.
    assert sim.ovs_ports(port_id) == [tap_name(port_id)]
    ids = sim.ovs_external_ids(tap_name(port_id))
    assert ids["iface-id"] == port_id and ids["attached-mac"] == mac
    assert ids["vm-uuid"] == instance

    if vnic == "normal":
        assert vf is None
        assert xml.get("type") == "ethernet"
        assert xml.find("target").get("dev") == tap_name(port_id)  # type: ignore[union-attr]
    else:
        row = sim.vf_row(vf)
        assert vf == sim.vf_rows[0]["vf"], "lowest free VF"
        state = sim.vf_state(vf)
        assert state["mac"] == mac and state["vlan"] == 0
        # The representor now carries the port's tap name, up, with the MTU.
        assert sim.link(row["representor"]) is None
        assert sim.link(tap_name(port_id)) == (1450, True)
        inventory = sim.json("inventory")
        claimed = {r["vf"]: r["claimed_by"] for r in inventory["vfs"] if r["claimed_by"]}
        assert claimed == {vf: port_id}
        if vnic == "direct":
            assert xml.get("type") == "hostdev" and pci_of(xml) == vf
            assert sim.vf_driver(vf) == "nfp"
            assert sim.relays() == []
        else:
            vhost = os.path.join(sim.host.layout.vhost_dir, ("vhu" + port_id)[:14])
            assert xml.get("type") == "vhostuser"
            source = xml.find("source")
            assert source is not None
            assert source.get("path") == vhost and source.get("mode") == "server"
            assert sim.vf_driver(vf) == "vfio-pci"
            assert sim.relays() == [(vf, vhost)]

    status = sim.status()
    assert [(p["port_id"], p["vf"], p["phase"], p["drift"]) for p in status["ports"]] == [
        (port_id, vf, "plugged", [])
    ]
    if vnic == "virtio-forwarder":
        assert status["ports"][0]["relay"] == vf
        assert status["ports"][0]["vf_driver"] == "vfio-pci"

    # Attaching again is a no-op that says so.
    again = sim.json(*args)
    assert again["status"] == "already attached" and again["vf"] == vf
    assert again["libvirt_xml"] == data["libvirt_xml"]
    assert sim.ovs_ports(port_id) == [tap_name(port_id)]
    assert sim.claims() == [port_id]

    detached = sim.json("detach", "--port-id", port_id)
    assert detached == {"port_id": port_id, "status": "detached", "vf": vf}
    assert sim.ovs_ports(port_id) == []
    assert sim.status()["ports"] == []
    if vf is not None:
        row = sim.vf_row(vf)
        assert sim.link(row["representor"]) is not None
        assert sim.link(tap_name(port_id)) is None
        assert sim.vf_driver(vf) == "nfp"
        assert sim.json("inventory")["vfs"] == sim.inventory["vfs"]
    # Detaching what is not attached is fine too.
    assert sim.json("detach", "--port-id", port_id)["status"] == "not attached"
    text = sim.cli("detach", "--port-id", port_id)
    assert text.returncode == 0 and "not attached" in text.stdout, explain(text)
    if vnic == "normal":
        run([IP, "link", "del", tap_name(port_id)])
    sim.assert_unchanged(before)


def test_attach_text_output(sim: Sim) -> None:
    port_id, mac = new_id(), new_mac()
    before = sim.snapshot()
    proc = sim.cli("attach", "--port-id", port_id, "--mac", mac, "--vnic-type", "direct",
                   "--instance-uuid", new_id())
    assert proc.returncode == 0, explain(proc)
    vf = sim.vf_rows[0]["vf"]
    assert proc.stdout.splitlines()[0] == f"port {port_id} attached on VF {vf}"
    assert '<interface type="hostdev"' in proc.stdout
    status = sim.cli("status")
    assert status.returncode == 0, explain(status)
    assert port_id in status.stdout and "plugged" in status.stdout and "none" in status.stdout
    assert sim.cli("detach", "--port-id", port_id).stdout.strip() == f"port {port_id}: detached"
    sim.assert_unchanged(before)


# -- status: drift -----------------------------------------------------------------------
def _promiscuous(name: str) -> bool:
    with IPRoute() as ipr:
        [msg] = ipr.get_links(ipr.link_lookup(ifname=name)[0])
        return bool(msg["flags"] & 0x100)  # IFF_PROMISC


def test_status_flags_a_deleted_ovs_port(sim: Sim) -> None:
    before = sim.snapshot()
    port_id, mac = new_id(), new_mac()
    vf = sim.attach("direct", port_id, mac)["vf"]
    assert sim.status()["ports"][0]["drift"] == []
    sim.vsctl("del-port", "br-int", tap_name(port_id))
    status = sim.status(expect=1)
    [port] = status["ports"]
    assert port["port_id"] == port_id and port["ovs_ports"] == []
    # The representor stays promiscuous unless ovs-vswitchd made it so
    # itself (it adds the port beside the plug's own flag change, and
    # whichever comes first sets the flag); then it let go of the flag with
    # the port (del-port waits for it), and that is drift too, which
    # reconcile restores with the port.
    promisc_drift = [] if _promiscuous(tap_name(port_id)) else [
        f"{tap_name(port_id)} is not promiscuous, expected promiscuous"]
    assert port["drift"] == [f"expected one OVS port with iface-id {port_id}, found 0",
                             *promisc_drift]
    text = sim.cli("status")
    assert text.returncode == 1 and "expected one OVS port" in text.stdout, explain(text)
    # Detach still puts everything back (the missing OVS port counts as removed).
    assert sim.json("detach", "--port-id", port_id)["vf"] == vf
    sim.assert_unchanged(before)
    assert sim.status()["ports"] == []


def test_status_flags_a_wrong_vf_mac(sim: Sim) -> None:
    before = sim.snapshot()
    port_id, mac = new_id(), new_mac()
    vf = sim.attach("virtio-forwarder", port_id, mac)["vf"]
    sim.set_vf_state(vf, mac="fa:16:3e:ff:ff:ff")
    [port] = sim.status(expect=1)["ports"]
    assert port["vf_mac"] == "fa:16:3e:ff:ff:ff"
    assert port["drift"] == [f"VF MAC is fa:16:3e:ff:ff:ff, expected {mac}"]
    sim.json("detach", "--port-id", port_id)
    sim.assert_unchanged(before)


def test_status_flags_a_missing_relay_and_wrong_driver(sim: Sim) -> None:
    before = sim.snapshot()
    port_id, mac = new_id(), new_mac()
    vf = sim.attach("virtio-forwarder", port_id, mac)["vf"]
    # Remove the relay behind the CLI's back, through the forwarder's own API.
    from smartnic_vif.host.forwarder.client import ForwarderClient

    layout = sim.host.layout
    vhost = os.path.join(layout.vhost_dir, ("vhu" + port_id)[:14])
    with ForwarderClient(layout.port_control_endpoint, layout.stats_endpoint, 5.0) as fwd:
        fwd.remove_sock(vf, vhost)
    assert sim.relays() == []
    [port] = sim.status(expect=1)["ports"]
    assert port["relay"] is None
    assert port["drift"] == [f"no virtio-forwarder relay pairs {vf} with {vhost}"]
    sim.json("detach", "--port-id", port_id)
    sim.assert_unchanged(before)


def test_a_reader_that_stops_reading_is_not_an_error(sim: Sim) -> None:
    # smartnic-vif inventory | head -1: the pipe closes before it writes.
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run(sim.argv("inventory"), stdout=write,  # noqa: S603 - fixed argv
                              stderr=subprocess.PIPE,
                              text=True, timeout=60)
    finally:
        os.close(write)
    assert proc.returncode == 0 and proc.stderr == "", (proc.returncode, proc.stderr)


def test_attach_beyond_the_relay_limit_fails_before_anything_changes(
    sim: Sim, tmp_path: Any,
) -> None:
    # attach claims the VF before it plugs; that claim must not count as the
    # VF's relay already there. A daemon built with one relay slot:
    from smartnic_vif.sim.forwarder import ForwarderSimulator

    directory = tempfile.mkdtemp(prefix="snv-", dir="/tmp")  # short ipc paths
    small = ForwarderSimulator(f"ipc://{directory}/pc", f"ipc://{directory}/st",
                               sysfs_root=sim.dir, max_relays=1).start()
    try:
        config = tmp_path / "small-forwarder.conf"
        config.write_text("[os_vif_smartnic]\n"
                          f"forwarder_port_control_endpoint = {small.port_control_endpoint}\n"
                          f"forwarder_stats_endpoint = {small.stats_endpoint}\n")
        before = sim.snapshot()
        first, second = new_id(), new_id()
        sim.json("attach", "--port-id", first, "--mac", new_mac(), "--vnic-type",
                 "virtio-forwarder", "--instance-uuid", new_id(), extra_config=str(config))
        plugged = sim.snapshot()
        proc = sim.cli("attach", "--port-id", second, "--mac", new_mac(), "--vnic-type",
                       "virtio-forwarder", "--instance-uuid", new_id(), extra_config=str(config))
        assert proc.returncode == 1, explain(proc)
        assert "1 of its 1 relays are in use" in proc.stderr and "limit" in proc.stderr, (
            explain(proc))
        sim.assert_unchanged(plugged)
        assert len(small.relays()) == 1
        assert sim.claims() == [first]
        sim.json("detach", "--port-id", first, extra_config=str(config))
        assert small.relays() == []
        sim.assert_unchanged(before)
    finally:
        small.stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_inventory_and_doctor_count_forwarder_relays_in_use(sim: Sim) -> None:
    # The daemon lists all its relay slots; the CLI counts those in use.
    assert sim.inventory["forwarder"] == {"relays_total": 32, "relays_in_use": 0, "error": None}
    before = sim.snapshot()
    port_id = new_id()
    sim.attach("virtio-forwarder", port_id, new_mac())
    try:
        assert sim.json("inventory")["forwarder"]["relays_in_use"] == 1
        assert "virtio-forwarder relays: 1 of 32 in use" in sim.cli("inventory").stdout
        doctor = {c["check"]: c for c in sim.json("doctor", expect=1)["checks"]}
        assert doctor["forwarder"]["ok"]
        assert doctor["forwarder"]["detail"] == "virtio-forwarder answers, 1/32 relays in use"
    finally:
        sim.json("detach", "--port-id", port_id)
    sim.assert_unchanged(before)


# -- reads: no privileged helper, nothing they do not use ---------------------------------
# Runs the CLI's main() in a process of its own and writes to the file named
# by SMARTNIC_VIF_TEST_REPORT what that process holds afterwards: its live
# children (a privileged helper forked by oslo.privsep lives until its parent
# exits) and the top-level packages it imported.
READ_PROBE = """
import json, os, sys
from smartnic_vif.cli.main import main
code = main(sys.argv[1:])
me = str(os.getpid())
children = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        continue
    if stat[stat.rindex(")") + 2:].split()[1] == me:
        children.append(pid)
with open(os.environ["SMARTNIC_VIF_TEST_REPORT"], "w") as f:
    json.dump({"exit": code, "children": children,
               "packages": sorted({m.split(".")[0] for m in sys.modules})}, f)
"""
# What each read may not load: the privileged helper, os-vif (and the
# versioned objects and eventlet it brings; vif_plug_ovs's constants module
# alone is plain data), and pyroute2 (reads frame their netlink requests
# themselves); inventory needs no OVSDB either.
NOT_FOR_READS = {"oslo_privsep", "os_vif", "oslo_versionedobjects", "eventlet", "pyroute2"}


@pytest.mark.parametrize(("command", "forbidden"), [
    ("inventory", NOT_FOR_READS | {"ovsdbapp", "ovs"}),
    ("status", NOT_FOR_READS),
    ("doctor", NOT_FOR_READS),
])
def test_reads_start_no_privileged_helper_and_load_only_what_they_use(
        sim: Sim, tmp_path: Any, command: str, forbidden: set[str]) -> None:
    before = sim.snapshot()
    direct, forwarder = new_id(), new_id()
    sim.attach("direct", direct, new_mac())
    sim.attach("virtio-forwarder", forwarder, new_mac())
    report = tmp_path / "report.json"
    try:
        proc = run([sys.executable, "-c", READ_PROBE, "--config-file", sim.config, command,
                    "--json"], env={"SMARTNIC_VIF_TEST_REPORT": str(report)})
        assert proc.returncode == 0, explain(proc)
        found = json.loads(report.read_text())
        # doctor fails its device_spec check here (none configured).
        assert found["exit"] == (1 if command == "doctor" else 0), explain(proc)
        output = json.loads(proc.stdout)
        if command == "status":
            assert sorted(p["port_id"] for p in output["ports"]) == sorted([direct, forwarder])
            assert all(p["drift"] == [] for p in output["ports"]), output
        assert found["children"] == [], "a read started a process (the privileged helper?)"
        assert sorted(forbidden & set(found["packages"])) == []
    finally:
        sim.json("detach", "--port-id", direct)
        sim.json("detach", "--port-id", forwarder)
    sim.assert_unchanged(before)


# -- failures leave the host as it was ------------------------------------------------------
def test_a_failed_driver_bind_gives_the_vf_its_driver_back(sim: Sim, tmp_path: Any) -> None:
    # The bind unbinds nfp, then finds no such driver: the failed step's own
    # undo must run, or the VF is left with no driver at all.
    before = sim.snapshot()
    bad = tmp_path / "nosuchdrv.conf"
    bad.write_text("[os_vif_smartnic]\nvfio_driver = nosuchdrv\n")
    port_id = new_id()
    proc = sim.cli("attach", "--port-id", port_id, "--mac", new_mac(), "--vnic-type",
                   "virtio-forwarder", "--instance-uuid", new_id(), extra_config=str(bad))
    assert proc.returncode == 1, explain(proc)
    assert "nosuchdrv" in proc.stderr, explain(proc)
    vf = sim.vf_rows[0]["vf"]
    assert sim.vf_driver(vf) == "nfp"
    sim.assert_unchanged(before)
    assert sim.status() == {"ports": [], "drift": False, "unexplained": [], "unrestored": []}


def recreate_representor(sim: Sim, vf_address: str) -> None:
    """Make a VF's representor veth pair again, as ``sim create`` made it."""
    sim.host.remake_representor(vf_address)


def test_a_port_whose_representor_vanished_is_detached_with_a_note(sim: Sim) -> None:
    before = sim.snapshot()
    port_id, mac = new_id(), new_mac()
    vf = sim.attach("virtio-forwarder", port_id, mac)["vf"]
    rep = sim.vf_row(vf)["representor"]
    run([IP, "link", "del", tap_name(port_id)])  # the representor, renamed, vanishes
    try:
        proc = sim.cli("detach", "--port-id", port_id, "--json")
        assert proc.returncode == 0, explain(proc)
        detached = json.loads(proc.stdout)
        assert detached["status"] == "detached" and detached["vf"] == vf
        # detach itself says what it could not put back, not only status.
        [what] = detached["unrestored"]
        assert f"rename representor {rep} to {tap_name(port_id)}" in what
        assert f"could not be restored: {what}" in proc.stderr, explain(proc)
        # The rest of the undo went on: the claim, the OVS port, the relay,
        # the VF's MAC and driver are back as they were.
        assert sim.claims() == [] and sim.ovs_ports(port_id) == [] and sim.relays() == []
        assert sim.vf_state(vf) == before["vfs"][vf][0] and sim.vf_driver(vf) == "nfp"
        # status says what could not be put back, until reconcile acknowledges it.
        status = sim.status(expect=1)
        [note] = status["unrestored"]
        assert note["port_id"] == port_id and note["vf"] == vf
        assert f"rename representor {rep} to {tap_name(port_id)}" in note["what"]
        assert "does not exist" in note["what"]
        text = sim.cli("status")
        assert text.returncode == 1 and "could not be restored" in text.stdout, explain(text)
        assert sim.json("detach", "--port-id", port_id)["status"] == "not attached"
        ack = sim.json("reconcile")
        assert [a["action"] for a in ack["actions"]] == [f"acknowledged: {note['what']}"]
        assert sim.status()["unrestored"] == []
    finally:
        recreate_representor(sim, vf)
    sim.assert_unchanged(before)


def lose_state_database(sim: Sim) -> None:
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(sim.host.layout.state_path, "state.db" + suffix))


def test_detach_after_the_state_database_was_lost_removes_what_the_port_left(
    sim: Sim,
) -> None:
    before = sim.snapshot()
    port_id, mac = new_id(), new_mac()
    vf = sim.attach("virtio-forwarder", port_id, mac)["vf"]
    rep = sim.vf_row(vf)["representor"]
    lose_state_database(sim)
    try:
        # status and doctor report what no claim explains.
        status = sim.status(expect=1)
        assert status["ports"] == []
        assert [(u["vf"], u["port_id"]) for u in status["unexplained"]] == [
            (vf, port_id), (vf, None)]
        # No VM is connected, so the daemon's stats name no socket: say so.
        relay = status["unexplained"][1]["what"]
        assert relay.startswith("virtio-forwarder relays it (no VM connected)"), relay
        doctor = {c["check"]: c for c in sim.json("doctor", expect=1)["checks"]}
        assert not doctor["unexplained"]["ok"] and vf in doctor["unexplained"]["detail"]
        # Another port is never handed the still-plugged VF.
        other = new_id()
        assert sim.attach("direct", other, new_mac())["vf"] != vf
        sim.json("detach", "--port-id", other)

        detached = sim.json("detach", "--port-id", port_id)
    finally:
        sim.cli("detach", "--port-id", port_id)

    assert detached["status"] == "detached" and detached["vf"] == vf
    assert "no claim" in detached["note"]
    assert sim.ovs_ports(port_id) == [] and sim.relays() == []
    assert sim.vf_driver(vf) == "nfp" and sim.vf_state(vf)["mac"] == "00:00:00:00:00:00"
    # The representor's name before the plug was only in the lost journal:
    # sysfs (and so a new process's discovery) knows it by the port's name.
    # It keeps that name, and status says so until reconcile acknowledges it.
    assert sim.link(tap_name(port_id)) is not None and sim.link(rep) is None
    status = sim.status(expect=1)
    assert (status["ports"], status["unexplained"]) == ([], [])
    [note] = status["unrestored"]
    assert (note["port_id"], note["vf"]) == (port_id, vf)
    assert f"representor {tap_name(port_id)} of VF {vf} keeps the port's name" in note["what"]
    assert sim.json("detach", "--port-id", port_id)["status"] == "not attached"
    sim.json("reconcile")
    assert sim.status() == {"ports": [], "unrestored": [], "unexplained": [], "drift": False}
    # Its name, MTU and flags from before the plug: back for the next test.
    mtu, up = before["links"][rep]
    run([IP, "link", "set", tap_name(port_id), "name", rep])
    sim.host.kernel_names_in_sysfs()
    run([IP, "link", "set", rep, "mtu", str(mtu), "promisc", "off", "up" if up else "down"])
    sim.assert_unchanged(before)


# -- doctor / reconcile --------------------------------------------------------------------
CHECKS = ["sysfs", "switchdev", "representors", "ovsdb", "bridge", "forwarder", "unexplained",
          "hw_offload", "tc_policy", "hw_tc_offload", "eswitch_mode", "device_spec"]


def test_doctor(sim: Sim, tmp_path: Any) -> None:
    data = sim.json("doctor", expect=1)
    checks = {c["check"]: c for c in data["checks"]}
    assert [c["check"] for c in data["checks"]] == CHECKS
    assert data["ok"] is False
    failing = [name for name, c in checks.items() if not c["ok"]]
    assert failing == ["device_spec"]
    # No nova.conf on this machine, and no pci_device_spec to fall back to.
    assert checks["device_spec"]["detail"] == (
        "no nova.conf to check (/etc/nova/nova.conf is not readable) and "
        "pci_device_spec is not set")
    assert "--nova-config" in checks["device_spec"]["fix"]
    assert "smartnic-vif pci-spec" in checks["device_spec"]["fix"]
    assert all(c["fix"] is None for c in checks.values() if c["ok"])
    assert str(PFS) in checks["sysfs"]["detail"]
    assert "netdev" in checks["bridge"]["detail"]

    # With the spec pci-spec prints, every check passes.
    specs = sim.json("pci-spec", "--physnet-map", f"{PF0}=physnet1",
                     "--physnet-map", f"{PF1}=physnet1")["device_spec"]
    assert len(specs) == 1  # 05:08.0-05:09.7
    good = tmp_path / "good.conf"
    good.write_text("[os_vif_smartnic]\n"
                    + "".join(f"pci_device_spec = {json.dumps(s)}\n" for s in specs))
    data = sim.json("doctor", extra_config=str(good))
    assert data["ok"] is True and all(c["ok"] and c["fix"] is None for c in data["checks"])
    d = {c["check"]: c for c in data["checks"]}
    assert [c["check"] for c in data["checks"]] == CHECKS + ["physnet", "legacy_physnet"]
    assert d["device_spec"]["detail"].startswith(f"{PFS * VFS_PER_PF}/{PFS * VFS_PER_PF} ")

    # A spec that leaves PF1 out, and an OVSDB that is not there.
    half = tmp_path / "half.conf"
    half.write_text("[os_vif_smartnic]\n"
                    'pci_device_spec = {"address": "0000:05:08.*", "physical_network": "p"}\n'
                    f"ovsdb_connection = unix:{tmp_path}/no-such-db.sock\n")
    data = sim.json("doctor", expect=1, extra_config=str(half))
    d = {c["check"]: c for c in data["checks"]}
    assert not d["ovsdb"]["ok"] and "no-such-db.sock" in d["ovsdb"]["fix"]
    assert "bridge" not in d and "unexplained" not in d  # cannot be checked without OVSDB
    assert not d["device_spec"]["ok"]
    assert d["device_spec"]["detail"].startswith(f"{VFS_PER_PF}/{PFS * VFS_PER_PF} ")
    assert "pci-spec" in d["device_spec"]["fix"]
    text = sim.cli("doctor", extra_config=str(half))
    assert text.returncode == 1, explain(text)
    assert "[FAIL] ovsdb" in text.stdout and "[ok] forwarder" in text.stdout
    assert "fix: start ovsdb-server" in text.stdout


def test_reconcile_with_nothing_to_do(sim: Sim) -> None:
    before = sim.snapshot()
    assert sim.json("reconcile") == {"actions": []}
    text = sim.cli("reconcile")
    assert text.returncode == 0 and text.stdout.strip() == "nothing to reconcile", explain(text)
    # A plugged port that has not drifted needs nothing.
    port_id = new_id()
    sim.attach("direct", port_id, new_mac())
    assert sim.json("reconcile") == {"actions": []}
    assert sim.status()["ports"][0]["phase"] == "plugged"
    sim.json("detach", "--port-id", port_id)
    sim.assert_unchanged(before)


# -- crash consistency ------------------------------------------------------------------------
def _processes_mentioning(text: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


def test_killed_attach_is_undone_by_reconcile_after_every_step(sim: Sim) -> None:
    """SIGKILL right after each step of a virtio-forwarder attach (and after the
    plan was journalled, before any change); reconcile must leave the host as
    it was every time."""
    mac = new_mac()
    dry = sim.attach("virtio-forwarder", new_id(), mac, "--dry-run")["plan"]
    steps = len(dry["steps"])
    assert steps >= 5, dry
    # Journalled with the claim: the steps of the plan's first phase.
    first_wave = Plan.from_dict(dry).journal_mark(0)
    assert 0 < first_wave <= steps, dry
    vf = dry["vf_address"]
    representor = sim.vf_row(vf)["representor"]
    before = sim.snapshot()
    vf_before = sim.vf_state(vf)
    for n in range(steps + 1):
        port_id = new_id()
        where = f"killed after step {n} of {steps}"
        proc = sim.cli("attach", "--port-id", port_id, "--mac", mac, "--vnic-type",
                       "virtio-forwarder", "--instance-uuid", new_id(), "--json",
                       env={KILL_ENV: str(n)})
        assert proc.returncode == -9, where + "\n" + explain(proc)
        # The privileged helper it forked goes with it.
        deadline = time.monotonic() + 5
        while _processes_mentioning(port_id) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _processes_mentioning(port_id) == [], where

        [port] = sim.status(expect=1)["ports"]
        assert (port["port_id"], port["vf"], port["phase"]) == (port_id, vf, "plugging"), where
        # Progress is journalled before steps start, and independent steps
        # run side by side: at least the n steps done were recorded as started.
        started = port["steps_started"]
        assert max(n, first_wave) <= started <= steps, (where, started)
        assert port["drift"] == ["interrupted in phase plugging: run reconcile"], where

        actions = sim.json("reconcile")["actions"]
        assert actions == [{"port_id": port_id, "vf": vf,
                            "action": f"undid {started} step(s) of an interrupted plug"}], where

        assert sim.ovs_ports(port_id) == [], where
        assert sim.vf_state(vf) == vf_before, where
        assert sim.vf_driver(vf) == "nfp", where
        assert sim.link(representor) == before["links"][representor], where
        assert sim.link(tap_name(port_id)) is None, where
        assert sim.relays() == [], where
        assert sim.status()["ports"] == [], where
        sim.assert_unchanged(before)


# -- concurrency ---------------------------------------------------------------------------------
def test_concurrent_attaches_never_share_a_vf(sim: Sim) -> None:
    count = 8
    assert len(sim.vf_rows) >= count
    before = sim.snapshot()
    ports = {new_id(): new_mac() for _ in range(count)}
    procs = {
        port_id: subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            sim.argv("attach", "--port-id", port_id, "--mac", mac, "--vnic-type", "direct",
                     "--instance-uuid", new_id(), "--json"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for port_id, mac in ports.items()
    }
    vfs = {}
    try:
        for port_id, proc in procs.items():
            out, err = proc.communicate(timeout=90)
            assert proc.returncode == 0, f"{port_id}: exit {proc.returncode}\n{out}\n{err}"
            vfs[port_id] = json.loads(out)["vf"]
        assert len(set(vfs.values())) == count, vfs
        status = sim.status()
        assert {p["port_id"]: p["vf"] for p in status["ports"]} == vfs
        assert all(p["phase"] == "plugged" and p["drift"] == [] for p in status["ports"])
        for port_id, vf in vfs.items():
            assert sim.vf_state(vf)["mac"] == ports[port_id]
            assert sim.ovs_ports(port_id) == [tap_name(port_id)]
        claimed = {r["vf"]: r["claimed_by"] for r in sim.json("inventory")["vfs"]
                   if r["claimed_by"]}
        assert claimed == {vf: port_id for port_id, vf in vfs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        detaches = [
            subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                sim.argv("detach", "--port-id", port_id, "--json"),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            for port_id in ports
        ]
        results = [(p.communicate(timeout=90), p.returncode) for p in detaches]
    for (out, err), code in results:
        assert code == 0, f"{out}\n{err}"
    sim.assert_unchanged(before)
    assert sim.status()["ports"] == []


# -- bad input ----------------------------------------------------------------------------------
UUID = "3f0a1c52-8a43-4bb5-9f4e-3d2b1c0a9e77"
GOOD_ATTACH = {"--port-id": UUID, "--mac": "fa:16:3e:00:00:42", "--vnic-type": "direct",
               "--instance-uuid": UUID}


def _attach_args(**changes: str) -> list[str]:
    opts = dict(GOOD_ATTACH)
    extra: list[str] = []
    for key, value in changes.items():
        flag = "--" + key.replace("_", "-")
        if flag in opts:
            opts[flag] = value
        else:
            extra += [flag, value]
    return ["attach", *[x for kv in opts.items() for x in kv], *extra]


# name -> (argv after the config options, what stderr must name)
BAD_INPUT: dict[str, tuple[list[str], list[str]]] = {
    "port id": (_attach_args(port_id="port-1"), ["--port-id", "port-1"]),
    "instance uuid": (_attach_args(instance_uuid="vm1"), ["--instance-uuid", "vm1"]),
    "mac": (_attach_args(mac="fa:16:3e:00:00"), ["--mac", "fa:16:3e:00:00"]),
    "multicast mac": (_attach_args(mac="01:00:5e:00:00:01"), ["--mac", "01:00:5e:00:00:01"]),
    "vnic type": (_attach_args(vnic_type="macvtap"), ["--vnic-type", "macvtap"]),
    "vhost path on direct": (_attach_args(vhost_path="/tmp/vhu-x"), ["--vhost-path"]),
    "relative vhost path": (
        _attach_args(vnic_type="virtio-forwarder", vhost_path="vhost/vhu-x"),
        ["--vhost-path", "vhost/vhu-x"],
    ),
    "mtu": (_attach_args(mtu="20"), ["--mtu", "20"]),
    "all-zero mac": (_attach_args(mac="00:00:00:00:00:00"), ["--mac", "00:00:00:00:00:00"]),
    "vif name": (_attach_args(vnic_type="normal", vif_name="tap 1"), ["--vif-name", "tap 1"]),
    "long physnet": (_attach_args(physnet="p" * 3000), ["--physnet", "p" * 64]),
    "physnet with an escape sequence": (_attach_args(physnet="phys\x1b[31mnet1"),
                                        ["--physnet", "phys\\x1b[31mnet1"]),
    "empty physnet": (_attach_args(physnet=""), ["--physnet"]),
    "vhost path outside the socket directory": (
        _attach_args(vnic_type="virtio-forwarder", vhost_path="/etc/passwd"),
        ["--vhost-path", "/etc/passwd", "vhostuser_socket_dir"],
    ),
    "vhost path with dot-dot": (
        _attach_args(vnic_type="virtio-forwarder", vhost_path="/var/lib/vhost_sockets/../x"),
        ["--vhost-path", "/var/lib/vhost_sockets/../x"],
    ),
    "vhost path that is a directory": (
        _attach_args(vnic_type="virtio-forwarder", vhost_path="/tmp/"), ["--vhost-path", "/tmp/"],
    ),
    "vhost path /": (_attach_args(vnic_type="virtio-forwarder", vhost_path="/"),
                     ["--vhost-path", "'/'"]),
    "vhost path with a newline": (
        _attach_args(vnic_type="virtio-forwarder", vhost_path="/tmp/vhu\nx"),
        ["--vhost-path", "/tmp/vhu\\nx"],
    ),
    "vhost path too long": (
        _attach_args(vnic_type="virtio-forwarder", vhost_path="/" + "v" * 107),
        ["--vhost-path", "107 bytes"],
    ),
    "sysfs root": (["--sysfs-root", "/tmp", "inventory"], ["--sysfs-root", "/tmp"]),
    "physnet map physnet": (["pci-spec", "--physnet-map", f"{PF0}=phys\x1b[2Jnet"],
                            ["--physnet-map", "phys\\x1b[2Jnet"]),
    "bridge": (_attach_args(bridge="br int"), ["--bridge", "br int"]),
    "detach port id": (["detach", "--port-id", "nope"], ["--port-id", "nope"]),
    "physnet map": (["pci-spec", "--physnet-map", "physnet1"], ["--physnet-map", "physnet1"]),
    "physnet map pf": (["pci-spec", "--physnet-map", "0000:99:00.0=physnet1"],
                       ["physnet_map", "0000:99:00.0"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_refused_and_changes_nothing(sim: Sim, case: str) -> None:
    argv, needles = BAD_INPUT[case]
    before = sim.snapshot()
    proc = sim.cli(*argv)
    assert proc.returncode == 2, explain(proc)
    assert "Traceback" not in proc.stderr and proc.stdout == "", explain(proc)
    # One line (argparse's own refusals add its usage text before it).
    said = [line for line in proc.stderr.splitlines() if not line.startswith(("usage:", " "))]
    assert len(said) == 1, "one line\n" + explain(proc)
    for needle in needles:
        assert needle in proc.stderr, f"{needle!r} not named\n" + explain(proc)
    assert sim.ovs_ports(UUID) == []
    sim.assert_unchanged(before)  # VF state, links, OVS, relays, claims


def test_missing_config_file_is_a_usage_error(sim: Sim, tmp_path: Any) -> None:
    before = sim.snapshot()
    missing = str(tmp_path / "nowhere.conf")
    for argv in (["status", "--json"], _attach_args()):
        proc = smartnic_vif("--config-file", missing, *argv)
        assert proc.returncode == 2, explain(proc)
        assert "--config-file" in proc.stderr and missing in proc.stderr, explain(proc)
        assert "Traceback" not in proc.stderr
    sim.assert_unchanged(before)


def test_sim_commands_refuse_bad_input(sim: Sim, tmp_path: Any) -> None:
    before = sim.snapshot()
    # destroy on a directory that holds no simulated host: nothing removed.
    keep = tmp_path / "not-a-sim"
    keep.mkdir()
    (keep / "precious").write_text("keep me")
    proc = smartnic_vif("sim", "destroy", "--dir", str(keep))
    assert proc.returncode == 2, explain(proc)
    assert str(keep) in proc.stderr and "no simulated host" in proc.stderr, explain(proc)
    assert (keep / "precious").read_text() == "keep me"
    # create with a bad size: refused before anything is made.
    new = tmp_path / "new-sim"
    proc = smartnic_vif("sim", "create", "--dir", str(new), "--vfs-per-pf", "0")
    assert proc.returncode == 2, explain(proc)
    assert "--vfs-per-pf 0" in proc.stderr, explain(proc)  # the option typed
    assert not new.exists()
    sim.assert_unchanged(before)


def _config(tmp_path: Any, **options: str) -> str:
    path = tmp_path / "extra.conf"
    path.write_text("[os_vif_smartnic]\n" + "".join(f"{k} = {v}\n" for k, v in options.items()))
    return str(path)


# option -> (bad value, argv); each is refused as usage, naming the option and the file.
BAD_CONFIG: dict[str, tuple[str, list[str]]] = {
    "kernel_backend": ("bogus", ["status"]),
    "default_datapath_type": ("bogus;dp", ["status"]),
    "network_device_mtu": ("20", ["status"]),
    "vhostuser_socket_dir_check": ("maybe", ["status"]),
    "integration_bridge": ("br int", _attach_args()),
    "vhostuser_socket_dir": ("vhost", _attach_args(vnic_type="virtio-forwarder")),
    # Paths and names checked when the file is read, not when a step uses them.
    "vfio_driver": ("../../x", _attach_args(vnic_type="virtio-forwarder")),
    "vendor_hook": ("hooks/vendor", _attach_args()),
    "state_path": ("state", ["status"]),
    "sysfs_root": ("sys-tree", ["status"]),
    "vhostuser_socket_dirs": ("/ok,vhost", ["status"]),
    "forwarder_port_control_endpoint": ("port_control", ["status"]),
    "forwarder_stats_endpoint": ("stats", ["inventory"]),
    "ovsdb_connection": ("db.sock", ["status"]),
}


@pytest.mark.parametrize("option", sorted(BAD_CONFIG))
def test_a_bad_config_value_is_named_with_its_file(sim: Sim, tmp_path: Any, option: str) -> None:
    value, argv = BAD_CONFIG[option]
    extra = _config(tmp_path, **{option: value})
    before = sim.snapshot()
    proc = sim.cli(*argv, extra_config=extra)
    assert proc.returncode == 2, explain(proc)
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, explain(proc)
    for needle in (option, extra):
        assert needle in proc.stderr, f"{needle!r} not named\n" + explain(proc)
    assert "--bridge" not in proc.stderr, explain(proc)
    sim.assert_unchanged(before)


def test_an_empty_vendor_hook_and_a_relative_sysfs_root_argument_are_accepted(
        sim: Sim, tmp_path: Any) -> None:
    # "vendor_hook =" means no hook; --sysfs-root is typed relative to where
    # the command runs (configured paths must be absolute).
    extra = _config(tmp_path, vendor_hook="")
    root = sim.host.dir
    proc = subprocess.run(  # noqa: S603 - fixed argv, no shell
        sim.argv("--sysfs-root", os.path.basename(root), "inventory", "--json",
                 extra_config=extra),
        capture_output=True, text=True, timeout=60, cwd=os.path.dirname(root),
    )
    assert proc.returncode == 0, explain(proc)
    assert json.loads(proc.stdout)["sysfs_root"] == root, explain(proc)


def test_an_unusable_state_path_is_one_line_naming_it(sim: Sim, tmp_path: Any) -> None:
    before = sim.snapshot()
    a_file = tmp_path / "state-file"
    a_file.write_text("")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "state.db").write_bytes(b"not a database " * 512)
    db_dir = tmp_path / "db-dir"
    (db_dir / "state.db").mkdir(parents=True)
    for path, needle in ((a_file, "not a directory"), (corrupt, "corrupt"),
                         (db_dir, "is a directory: remove it")):
        for argv in (["status"], _attach_args()):
            proc = sim.cli(*argv, extra_config=_config(tmp_path, state_path=str(path)))
            assert proc.returncode == 1, explain(proc)
            assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, explain(proc)
            assert str(path) in proc.stderr and needle in proc.stderr, explain(proc)
    assert (corrupt / "state.db").read_bytes() == b"not a database " * 512
    sim.assert_unchanged(before)


def test_doctor_names_an_unusable_state_database(sim: Sim, tmp_path: Any) -> None:
    corrupt = tmp_path / "corrupt-for-doctor"
    corrupt.mkdir()
    (corrupt / "state.db").write_bytes(b"not a database " * 512)
    proc = sim.cli("doctor", "--json", extra_config=_config(tmp_path, state_path=str(corrupt)))
    assert proc.returncode == 1, explain(proc)
    checks = {c["check"]: c for c in json.loads(proc.stdout)["checks"]}
    state = checks["state"]
    assert not state["ok"] and "corrupt" in state["detail"], explain(proc)
    assert str(corrupt) in state["detail"] and "state_path" in state["fix"], explain(proc)
    # Host state no claim explains cannot be judged without the claims.
    assert "unexplained" not in checks, explain(proc)


def test_a_vhost_path_that_is_not_a_socket_is_refused(sim: Sim, tmp_path: Any) -> None:
    before = sim.snapshot()
    precious = os.path.join(sim.host.layout.vhost_dir, "precious")
    with open(precious, "w") as f:
        f.write("keep me")
    try:
        proc = sim.cli(*_attach_args(vnic_type="virtio-forwarder", vhost_path=precious))
        assert proc.returncode == 2, explain(proc)
        assert "--vhost-path" in proc.stderr and "not a socket" in proc.stderr, explain(proc)
        # With the directory check turned off a path may be anywhere, but an
        # existing file that is not a socket is still refused.
        off = _config(tmp_path, vhostuser_socket_dir_check="false")
        for path in ("/etc/passwd", "/tmp"):
            proc = sim.cli(*_attach_args(vnic_type="virtio-forwarder", vhost_path=path),
                           extra_config=off)
            assert proc.returncode == 2, explain(proc)
            assert "not a socket" in proc.stderr and path in proc.stderr, explain(proc)
        with open(precious) as f:
            assert f.read() == "keep me"
    finally:
        os.unlink(precious)
    sim.assert_unchanged(before)


def test_reattach_same_arguments_is_a_no_op_and_different_ones_are_refused(sim: Sim) -> None:
    before = sim.snapshot()
    port_id, mac, vm = new_id(), new_mac(), new_id()
    args = ["--port-id", port_id, "--mac", mac, "--vnic-type", "direct", "--instance-uuid", vm,
            "--physnet", "physnet1"]
    first = sim.json("attach", *args)
    attached = sim.snapshot()
    again = sim.json("attach", *args)
    assert again["status"] == "already attached" and again["vf"] == first["vf"]
    sim.assert_unchanged(attached)
    # Invalid input is refused as such, before the port is looked at.
    proc = sim.cli("attach", *args, "--vif-name", "bad name")
    assert proc.returncode == 2 and "--vif-name" in proc.stderr, explain(proc)
    other_mac = new_mac()
    for changed, needles in (
        (["--mac", other_mac], ["--mac", other_mac, mac]),
        (["--trusted"], ["--trusted"]),
        (["--mtu", "1400"], ["--mtu", "1400"]),
        (["--physnet", "physnet2"], ["--physnet", "physnet2", "physnet1"]),
        (["--vnic-type", "virtio-forwarder"], ["--vnic-type", "virtio-forwarder", "direct"]),
    ):
        opts = dict(zip(args[::2], args[1::2], strict=True))
        extra = []
        for flag, value in zip(changed[::2], [*changed[1::2], None], strict=False):
            if value is None:
                extra.append(flag)
            else:
                opts[flag] = value
        proc = sim.cli("attach", *[x for kv in opts.items() for x in kv], *extra)
        assert proc.returncode == 1, explain(proc)
        assert "already attached" in proc.stderr and "Traceback" not in proc.stderr, explain(proc)
        for needle in needles:
            assert needle in proc.stderr, f"{needle!r} not named\n" + explain(proc)
        sim.assert_unchanged(attached)
        # --dry-run says the same, rather than planning a new attach.
        proc = sim.cli("attach", *[x for kv in opts.items() for x in kv], *extra, "--dry-run")
        assert proc.returncode == 1 and "already attached" in proc.stderr, explain(proc)
    # With the same arguments, --dry-run says what attaching again would repair.
    assert sim.json("attach", *args, "--dry-run")["repairs"] == []
    sim.vsctl("set", "Interface", tap_name(port_id), "external_ids:attached-mac=00:00:00:00:00:01")
    [repair] = sim.json("attach", *args, "--dry-run")["repairs"]
    assert "attached-mac" in repair, repair
    assert sim.ovs_ports(port_id) != []  # a dry run changed nothing
    sim.json("attach", *args)  # the repair itself
    sim.assert_unchanged(attached)
    sim.json("detach", "--port-id", port_id)
    sim.assert_unchanged(before)


def test_attach_dry_run_of_an_attached_normal_port_names_what_attaching_again_repairs(
    sim: Sim, tap: Any,
) -> None:
    # A normal port has no plan of ours, but attaching it again plugs it again
    # through os-vif: the dry run must say so when its OVS port went, as
    # status and reconcile do, not "would change nothing".
    port_id, mac, vm = new_id(), new_mac(), new_id()
    args = ["--port-id", port_id, "--mac", mac, "--vnic-type", "normal", "--instance-uuid", vm]
    tap(port_id)
    sim.json("attach", *args)
    try:
        assert sim.json("attach", *args, "--dry-run")["repairs"] == []
        sim.vsctl("del-port", tap_name(port_id))
        [repair] = sim.json("attach", *args, "--dry-run")["repairs"]
        assert "OVS port" in repair and "plug the port again" in repair, repair
        assert sim.ovs_ports(port_id) == []  # a dry run changed nothing
        proc = sim.cli("attach", *args, "--dry-run")
        assert proc.returncode == 0 and "would repair" in proc.stdout, explain(proc)
        sim.json("attach", *args)  # the repair itself
        assert sim.ovs_ports(port_id) == [tap_name(port_id)]
        assert sim.json("attach", *args, "--dry-run")["repairs"] == []
    finally:
        sim.json("detach", "--port-id", port_id)
