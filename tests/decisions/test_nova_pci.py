"""doctor's view of Nova's [pci] configuration: the reader of nova.conf
against Nova's own option declarations, and every finding, passing and failing,
against Nova's own ``Whitelist`` on the same lines and VFs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nova.conf.pci
import pytest
from nova.pci import whitelist as nova_whitelist
from oslo_config import cfg

from smartnic_vif.decisions.devspec import device_spec_lines, generate_device_specs
from smartnic_vif.decisions.nova_pci import Finding, check_nova_pci, describe_vfs
from smartnic_vif.host.novaconf import NovaConfigError, read_nova_pci
from tests.decisions.hosts import nova_dev_dict, sim_inventory

# Two switchdev PFs (05:00.0, 05:00.1: VFs 05:08.0-05:09.7) and a legacy PF
# (81:00.0: VFs 81:08.0-81:08.7) with the same vendor and product ids.
HOST = sim_inventory(2, 8, legacy=1)
PF0, PF1, LEGACY = (pf.address for pf in HOST.pfs)
SOURCE = "/etc/nova/nova.conf"
ALIAS = '{"name": "vf", "vendor_id": "19ee", "product_id": "6003", "device_type": "type-VF"}'


def spec(address: str | dict[str, str], physnet: str | None = None) -> str:
    entry: dict[str, Any] = {"address": address}
    if physnet is not None:
        entry["physical_network"] = physnet
    return json.dumps(entry)


def findings(lines: list[str], alias: list[str] = ()) -> dict[str, Finding]:  # type: ignore[assignment]
    out = check_nova_pci(HOST, lines, alias, SOURCE)
    assert [f.check for f in out] == ["device_spec", "physnet", "legacy_physnet", "alias"][
        :len(out)] or [f.check for f in out] == ["device_spec", "alias"]
    for f in out:  # a failed finding names the fix and the file, a passing one neither
        assert (f.fix is None) == f.ok and (f.ok or SOURCE in f.fix)  # type: ignore[operator]
    return {f.check: f for f in out}


def nova_tags(lines: list[str]) -> dict[str, str | None]:
    """VF address -> physical_network of each VF Nova's whitelist takes."""
    whitelist = nova_whitelist.Whitelist(lines)
    out = {}
    for vf in HOST.vfs():
        found = whitelist.device_assignable(nova_dev_dict(vf))
        if found is not None:
            out[vf.address] = found.get_tags().get("physical_network")
    return out


def test_pci_spec_output_passes_every_check(nova_sysfs: Any, nova_conf: Any) -> None:
    lines = device_spec_lines(generate_device_specs(HOST, {PF0: "physnet1", PF1: "physnet2"}))
    got = findings(lines, [ALIAS])
    assert all(f.ok for f in got.values()), got
    assert got["device_spec"].detail == (
        f"16/16 switchdev VFs match the device_spec entries in {SOURCE}")
    assert got["alias"].detail == f"1 [pci] alias name(s) in {SOURCE}: vf"
    nova_sysfs(HOST)
    assert len(nova_tags(lines)) == 16


def test_no_device_spec() -> None:
    got = findings([])
    assert not got["device_spec"].ok
    assert got["device_spec"].detail == f"{SOURCE} has no [pci] device_spec"
    assert "smartnic-vif pci-spec" in got["device_spec"].fix  # type: ignore[operator]
    assert got["alias"].ok


def test_bad_device_spec_names_the_entry() -> None:
    got = findings([spec("0000:05:08.*", "physnet1"), '{"address": "0000:05:20.0"}'])
    assert not got["device_spec"].ok and set(got) == {"device_spec", "alias"}
    assert "[pci] device_spec entry 1" in got["device_spec"].detail
    assert "slot" in got["device_spec"].detail and "\n" not in got["device_spec"].detail


def test_uncovered_switchdev_vfs(nova_sysfs: Any, nova_conf: Any) -> None:
    # PF0's VFs and half of PF1's (05:09.0-3); Nova agrees on which.
    lines = [spec("0000:05:08.*", "physnet1"),
             spec({"bus": "05", "slot": "09", "function": "[0-3]"}, "physnet1")]
    nova_sysfs(HOST)
    covered = set(nova_tags(lines))
    got = findings(lines)
    assert not got["device_spec"].ok
    assert got["device_spec"].detail == (
        f"12/16 switchdev VFs match the device_spec entries in {SOURCE}; no entry matches "
        f"PF {PF1} VFs 4-7 (0000:05:09.4..0000:05:09.7)")
    assert covered == {vf.address for vf in HOST.vfs() if vf.switchdev} - {
        f"0000:05:09.{f}" for f in range(4, 8)}
    assert got["physnet"].ok and got["legacy_physnet"].ok


def test_switchdev_vfs_without_physnet(nova_sysfs: Any, nova_conf: Any) -> None:
    lines = [spec("0000:05:08.*", "physnet1"), spec("0000:05:09.*")]
    nova_sysfs(HOST)
    assert set(nova_tags(lines).values()) == {"physnet1", None}
    got = findings(lines)
    assert got["device_spec"].ok and not got["physnet"].ok
    assert got["physnet"].detail.endswith(f"PF {PF1} VFs 0-7 (0000:05:09.0..0000:05:09.7)")
    assert "tunnelled" in got["physnet"].detail
    assert '"physical_network"' in got["physnet"].fix  # type: ignore[operator]


@pytest.mark.parametrize(
    ("legacy_entry", "shares"),
    [
        (spec("0000:81:08.*", "physnet1"), True),  # the switchdev VFs' physnet
        (spec("0000:81:08.*", "physnet2"), False),  # another one: separated
        (spec("0000:81:08.*"), False),  # tunnel pool, no switchdev VF in it
        ('{"vendor_id": "19ee", "product_id": "6003", "physical_network": "physnet1"}', True),
        (None, False),  # not in device_spec at all
    ],
)
def test_legacy_vfs_sharing_a_physnet(legacy_entry: str | None, shares: bool,
                                      nova_sysfs: Any, nova_conf: Any) -> None:
    lines = [spec({"bus": "05", "slot": "0[89]"}, "physnet1")]
    if legacy_entry is not None:
        lines.append(legacy_entry)
    nova_sysfs(HOST)
    tags = nova_tags(lines)
    legacy_on_physnet1 = [a for a, p in tags.items() if a.startswith("0000:81:")
                          and p == "physnet1"]
    assert bool(legacy_on_physnet1) == shares  # what Nova would pool together
    got = findings(lines)
    assert got["legacy_physnet"].ok is not shares
    if shares:
        assert got["legacy_physnet"].detail.startswith(
            f"legacy VFs PF {LEGACY} VFs 0-7 (0000:81:08.0..0000:81:08.7) share "
            "physical_network physnet1 with switchdev VFs")
        assert "another physical_network" in got["legacy_physnet"].fix  # type: ignore[operator]
        assert "remote_managed" not in got["legacy_physnet"].fix  # type: ignore[operator]


def test_untagged_legacy_and_switchdev_vfs_share_the_tunnel_pool() -> None:
    got = findings([spec({"bus": "05", "slot": "0[89]"}), spec("0000:81:08.*")])
    assert not got["legacy_physnet"].ok and "physical_network None" in got["legacy_physnet"].detail
    assert not got["physnet"].ok


def test_bad_alias() -> None:
    got = findings([spec("0000:05:08.*", "p"), spec("0000:05:09.*", "p")],
                   ['{"name": "vf", "vendor_id": "19ee"}'])
    assert got["device_spec"].ok and not got["alias"].ok
    assert "[pci] alias entry 0" in got["alias"].detail and SOURCE in got["alias"].detail


def test_describe_vfs_is_short_for_many() -> None:
    big = sim_inventory(1, 256)
    vfs = [vf for vf in big.vfs() if vf.index % 2 == 0]
    text = describe_vfs(vfs)
    assert text.startswith("PF 0000:05:00.0 VFs 0,2,4,6,... (0000:05:08.0..") and len(text) < 100


# -- reading nova.conf ---------------------------------------------------------------------
NOVA_CONF = """\
[DEFAULT]
debug = true
pci_passthrough_whitelist = {"address": "0000:81:08.*", "physical_network": "legacy"}
pci_alias = {"name": "old", "vendor_id": "19ee", "product_id": "6003"}

[pci]
passthrough_whitelist = {"address": "0000:05:09.*", "physical_network": "physnet2"}
device_spec = {"address": "0000:05:08.*", "physical_network": "physnet1"}
device_spec = [{"address": "0000:05:09.0"}, {"address": "0000:05:09.1"}]
alias = {"name": "vf", "vendor_id": "19ee", "product_id": "6003"}

[libvirt]
virt_type = kvm
"""


def nova_reads(path: Path) -> tuple[list[str], list[str]]:
    """What Nova's own option declarations give for the file."""
    conf = cfg.ConfigOpts()
    nova.conf.pci.register_opts(conf)
    conf(args=[], default_config_files=[str(path)], default_config_dirs=[])
    return list(conf.pci.device_spec), list(conf.pci.alias)


@pytest.mark.parametrize("text", [NOVA_CONF, "[pci]\n", "[DEFAULT]\n", NOVA_CONF.replace(
    "passthrough_whitelist", "# passthrough_whitelist")])
def test_reads_what_nova_reads(text: str, tmp_path: Path) -> None:
    path = tmp_path / "nova.conf"
    path.write_text(text)
    got = read_nova_pci(str(path))
    device_spec, alias = nova_reads(path)
    assert (list(got.device_spec), list(got.alias)) == (device_spec, alias)
    if text == NOVA_CONF:
        assert len(device_spec) == 4 and len(alias) == 2
        assert any("passthrough_whitelist" in n for n in got.deprecated)
        assert any("pci_alias" in n for n in got.deprecated)
        # All four lines count, the deprecated names' first (as Nova gets them):
        # 05:09.0 and .1 take their tag from passthrough_whitelist's entry.
        result = check_nova_pci(HOST, got.device_spec, got.alias, str(path))
        assert [f.ok for f in result] == [True, True, True, True]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("[pci\ndevice_spec = {}\n", "Invalid section"),
        ("device_spec = {}\n", "Section must be started"),
        ("[pci]\njust words\n", "No ':' or '=' found"),
    ],
)
def test_bad_nova_conf_is_one_line(text: str, why: str, tmp_path: Path) -> None:
    path = tmp_path / "nova.conf"
    path.write_text(text)
    with pytest.raises(NovaConfigError) as exc:
        read_nova_pci(str(path))
    message = str(exc.value)
    assert message.startswith(f"nova config {path}: ") and why in message and "\n" not in message


def test_missing_nova_conf(tmp_path: Path) -> None:
    with pytest.raises(NovaConfigError, match=f"^nova config {tmp_path}/nope.conf: no such file$"):
        read_nova_pci(str(tmp_path / "nope.conf"))
    with pytest.raises(NovaConfigError, match="no such file"):
        read_nova_pci(str(tmp_path))  # a directory
