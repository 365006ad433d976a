"""``doctor --nova-config`` and ``pci-spec`` as commands, on a simulated host's
sysfs tree (2 switchdev PFs x 8 VFs and a legacy PF; no links, OVS or
forwarder, so doctor's OVSDB and forwarder checks fail and are not looked at
here). Each run is the console script in its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from smartnic_vif.sim.sysfs_tree import SysfsTree
from tests.decisions.hosts import sim_layout

CLI = os.path.join(os.path.dirname(sys.executable), "smartnic-vif")
NOVA_CHECKS = ["nova_config", "device_spec", "physnet", "legacy_physnet", "alias"]


@pytest.fixture
def host(tmp_path: Path) -> Path:
    tree = SysfsTree(str(tmp_path))
    tree.skeleton(["nfp"])
    for pf in sim_layout(2, 8, 1, str(tmp_path)).pf_specs():
        tree.add_pf(pf, total_vfs=64)
    conf = tmp_path / "smartnic-vif.conf"
    conf.write_text(
        "[os_vif_smartnic]\n"
        f"sysfs_root = {tmp_path}\n"
        f"state_path = {tmp_path}/state\n"
        f"ovsdb_connection = unix:{tmp_path}/no-ovsdb.sock\n"
        "ovsdb_timeout = 1\n"
        f"forwarder_port_control_endpoint = ipc://{tmp_path}/no-port-control\n"
        f"forwarder_stats_endpoint = ipc://{tmp_path}/no-stats\n"
        "forwarder_timeout = 0.05\n")
    return tmp_path


def cli(host: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - fixed argv, no shell
        [CLI, *argv, "--config-file", str(host / "smartnic-vif.conf")],
        capture_output=True, text=True, timeout=120, env=dict(os.environ))


def doctor(host: Path, *argv: str) -> dict[str, dict[str, Any]]:
    proc = cli(host, "doctor", "--json", *argv)
    assert proc.returncode == 1, proc.stderr  # OVSDB is not there
    return {c["check"]: c for c in json.loads(proc.stdout)["checks"]}


def nova_conf(host: Path, *lines: str) -> Path:
    path = host / "nova.conf"
    path.write_text("[DEFAULT]\ndebug = true\n[pci]\n" + "".join(f"{ln}\n" for ln in lines))
    return path


def test_pci_spec_output_in_nova_conf_passes(host: Path) -> None:
    out = cli(host, "pci-spec", "--physnet-map", "0000:05:00.0=physnet1",
              "--physnet-map", "0000:05:00.1=physnet1")
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in out.stdout.splitlines() if ln != "[pci]"]
    # 16 VFs in 05:08.0-05:09.7: one entry (the legacy PF's VFs are on bus 81).
    assert lines[0] == 'device_spec = {"address": {"bus": "05", "domain": "0000", ' \
        '"function": ".*", "slot": "0[89]"}, "physical_network": "physnet1"}'
    assert len(lines) == 2 and lines[1].startswith("alias = ")
    path = nova_conf(host, *lines)
    checks = doctor(host, "--nova-config", str(path))
    assert [c for c in checks if c in NOVA_CHECKS] == NOVA_CHECKS
    assert all(checks[c]["ok"] for c in NOVA_CHECKS), checks
    assert checks["nova_config"]["detail"] == f"read [pci] of {path}"
    assert checks["device_spec"]["detail"].startswith("16/16 switchdev VFs match")
    # --per-vf: today's form, a slot of eight VFs per entry here.
    per_vf = cli(host, "pci-spec", "--per-vf", "--json")
    assert json.loads(per_vf.stdout)["device_spec"] == [
        {"address": "0000:05:08.*"}, {"address": "0000:05:09.*"}]


def test_each_failing_check_says_how_to_fix_it_in_the_file(host: Path) -> None:
    path = nova_conf(
        host,
        'passthrough_whitelist = {"address": "0000:05:08.*", "physical_network": "physnet1"}',
        'device_spec = {"address": "0000:05:09.0"}',
        'device_spec = {"address": "0000:81:*.*", "physical_network": "physnet1"}',
        'alias = {"name": "vf"}')
    checks = doctor(host, "--nova-config", str(path))
    assert checks["nova_config"]["ok"]
    assert checks["nova_config"]["detail"] == (
        f"read [pci] of {path} ([pci] passthrough_whitelist is deprecated: "
        "rename it [pci] device_spec)")
    failed = [c for c in NOVA_CHECKS if not checks[c]["ok"]]
    assert failed == ["device_spec", "physnet", "legacy_physnet", "alias"]
    for name in failed:
        assert str(path) in checks[name]["fix"] and "\n" not in checks[name]["fix"]
    assert "9/16 switchdev VFs" in checks["device_spec"]["detail"]
    assert "VFs 1-7" in checks["device_spec"]["detail"]  # 05:09.1-7 of PF1
    text = cli(host, "doctor", "--nova-config", str(path))
    assert "[FAIL] legacy_physnet: legacy VFs PF 0000:81:00.0" in text.stdout


def test_bad_or_missing_nova_conf(host: Path) -> None:
    missing = cli(host, "doctor", "--nova-config", str(host / "nope.conf"))
    assert missing.returncode == 2
    assert missing.stderr == f"smartnic-vif doctor: --nova-config {host}/nope.conf: no such file\n"
    bad = host / "bad.conf"
    bad.write_text("[pci\n")
    checks = doctor(host, "--nova-config", str(bad))
    assert not checks["nova_config"]["ok"] and "device_spec" not in checks
    assert checks["nova_config"]["detail"].startswith(f"nova config {bad}: ")
    assert str(bad) in checks["nova_config"]["fix"]


def test_without_nova_conf_pci_device_spec_is_the_fallback(host: Path) -> None:
    # No --nova-config and no /etc/nova/nova.conf here.
    assert not os.path.exists("/etc/nova/nova.conf")
    checks = doctor(host)
    assert not checks["device_spec"]["ok"] and "nova_config" not in checks
    assert "--nova-config" in checks["device_spec"]["fix"]
    conf = host / "smartnic-vif.conf"
    conf.write_text(conf.read_text() + 'pci_device_spec = {"address": "0000:05:08.*"}\n')
    checks = doctor(host)
    assert [c for c in checks if c in NOVA_CHECKS] == ["device_spec", "physnet",
                                                       "legacy_physnet"]
    assert "pci_device_spec in [os_vif_smartnic] of" in checks["device_spec"]["detail"]
    assert checks["device_spec"]["detail"].startswith("8/16 ")
