"""pci-spec's fewest device_spec entries, judged by Nova's own ``PciDeviceSpec``.

The hosts are the simulator's layouts (``SimLayout.pf_specs``: switchdev PFs at
05:00.x whose VFs run across slots and buses, legacy PFs at 81:00.x) written as
a sysfs tree only (no links, no root) and read by discovery. Every PCI device
on the host becomes the device dict Nova's libvirt driver reports (the keys
``PciDeviceSpec.match`` reads: ``vendor_id``, ``product_id``, ``address``,
``parent_addr`` for a VF) and goes through Nova's ``Whitelist``, as Nova's PCI
tracker does (``device_assignable``): exactly the wanted switchdev VFs must be
assignable, each with its physical network, and no PF, legacy VF or other
device.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from nova.pci import devspec as nova_devspec
from nova.pci import whitelist as nova_whitelist

from smartnic_vif.decisions.devspec import (
    _values_regex,
    check_generated_specs,
    device_spec_lines,
    generate_device_specs,
)
from smartnic_vif.host.discovery import discover
from smartnic_vif.host.pcibus import pci_addresses
from smartnic_vif.model.errors import SmartNICError
from smartnic_vif.model.inventory import Inventory
from smartnic_vif.sim.sysfs_tree import SysfsTree
from tests.decisions.hosts import sim_inventory, sim_layout


def sim_tree_inventory(root: Path, pfs: int, vfs: int, legacy: int = 0,
                       other_devices: tuple[str, ...] = ()) -> Inventory:
    """The simulator's sysfs tree of the layout (no links, no root), read by
    discovery; ``other_devices`` are PCI devices that are no SR-IOV function."""
    tree = SysfsTree(str(root))
    tree.skeleton(["nfp"])
    for pf in sim_layout(pfs, vfs, legacy, str(root)).pf_specs():
        tree.add_pf(pf, total_vfs=max(vfs, 64))
    for address in other_devices:
        tree._device(address, ("8086", "1533"), None, 0)
    return discover(str(root))


def nova_devices(inventory: Inventory, others: list[str] = ()) -> list[dict[str, Any]]:  # type: ignore[assignment]
    """Every PCI device on the host as Nova's libvirt driver reports it."""
    known: dict[str, dict[str, Any]] = {}
    for pf in inventory.pfs:
        known[pf.address] = {"address": pf.address, "vendor_id": pf.vendor_id,
                             "product_id": pf.product_id, "dev_type": "type-PF"}
        for vf in pf.vfs:
            known[vf.address] = {"address": vf.address, "vendor_id": vf.vendor_id,
                                 "product_id": vf.product_id, "dev_type": "type-VF",
                                 "parent_addr": vf.pf_address}
    for address in others:
        known.setdefault(address, {"address": address, "vendor_id": "8086",
                                   "product_id": "1533", "dev_type": "type-PCI"})
    return list(known.values())


def nova_assigns(lines: list[str], devices: list[dict[str, Any]]) -> dict[str, str | None]:
    """address -> physical_network of every device Nova's tracker would take."""
    whitelist = nova_whitelist.Whitelist(lines)
    out = {}
    for dev in devices:
        spec = whitelist.device_assignable(dict(dev))
        if spec is not None:
            out[dev["address"]] = spec.get_tags().get("physical_network")
    return out


HOSTS = [
    (1, 8, 0), (1, 12, 1), (1, 256, 0), (2, 8, 1), (2, 256, 2), (4, 64, 0), (4, 256, 0),
    (4, 256, 1),
]


INVENTORIES = {host: sim_inventory(*host) for host in HOSTS}


@pytest.mark.parametrize(("pfs", "vfs", "legacy"), HOSTS)
@pytest.mark.parametrize("physnets", ["one", "per-pf", "tunnel", "first-only"])
def test_nova_takes_exactly_the_switchdev_vfs(
    pfs: int, vfs: int, legacy: int, physnets: str, nova_sysfs: Any, nova_conf: Any,
) -> None:
    inventory = INVENTORIES[(pfs, vfs, legacy)]
    nova_sysfs(inventory)
    switchdev = [pf for pf in inventory.pfs if pf.switchdev]
    assert len(switchdev) == pfs and len(inventory.pfs) == pfs + legacy
    physnet_map: dict[str, str | None] = {
        "one": {pf.address: "physnet1" for pf in switchdev},
        "per-pf": {pf.address: f"physnet{n}" for n, pf in enumerate(switchdev)},
        "tunnel": {pf.address: None for pf in switchdev},
        "first-only": {switchdev[0].address: "physnet1"},
    }[physnets]
    specs = generate_device_specs(inventory, physnet_map)
    wanted = {vf.address: physnet_map[pf.address]
              for pf in switchdev if pf.address in physnet_map for vf in pf.vfs}
    devices = nova_devices(inventory)
    assert nova_assigns(device_spec_lines(specs), devices) == wanted
    # Entry by entry, Nova's PciDeviceSpec takes only wanted VFs of the entry's
    # physical network.
    for line in device_spec_lines(specs):
        entry = nova_devspec.PciDeviceSpec(json.loads(line))
        physnet = entry.get_tags().get("physical_network")
        taken = [d["address"] for d in devices if entry.match(dict(d))]
        assert taken and all(wanted.get(a, "-") == physnet for a in taken), line
    # The fewest: one entry per physical network when nothing lies between its
    # VFs, never more than two per PF on these layouts (a PF's VFs span two
    # buses at most).
    per_physnet = {}
    for entry in specs:
        per_physnet[entry.get("physical_network")] = (
            per_physnet.get(entry.get("physical_network"), 0) + 1)
    if physnets in ("one", "tunnel", "first-only") and not (physnets == "first-only"
                                                          and pfs > 1 and vfs == 256):
        assert len(specs) == 1, specs
    assert all(n <= 2 * sum(1 for p in physnet_map.values() if p == net)
               for net, n in per_physnet.items())
    if vfs > 64:
        return
    # The per-VF form gives Nova the same VFs, in as many entries or more.
    per_vf = generate_device_specs(inventory, physnet_map, per_vf=True)
    assert nova_assigns(device_spec_lines(per_vf), nova_devices(inventory)) == wanted
    assert len(per_vf) >= len(specs)


def test_four_pfs_of_256_in_a_few_lines() -> None:
    """The issue's 4x256 host: 1,024 VFs in two entries per PF at most."""
    inventory = INVENTORIES[(4, 256, 0)]
    specs = generate_device_specs(
        inventory, {pf.address: f"physnet{n}" for n, pf in enumerate(inventory.pfs)})
    assert [(e["address"]["bus"], e["address"]["slot"], e["physical_network"])
            for e in specs] == [
        ("05", "0[89a-f]|1.", "physnet0"), ("06", "0[89a-f]", "physnet0"),
        ("06", "1.", "physnet1"), ("07", "0[89a-f]|1[0-7]", "physnet1"),
        ("07", "1[89a-f]", "physnet2"), ("08", "0[89a-f]|1.", "physnet2"),
        ("0[9a]", "0[89a-f]|1.", "physnet3"),
    ]
    assert all(e["address"]["domain"] == "0000" and e["address"]["function"] == ".*"
               for e in specs)
    one = generate_device_specs(inventory, {pf.address: "physnet1" for pf in inventory.pfs})
    assert one == [{"address": {"domain": "0000", "bus": "0[5-9a]", "slot": "0[89a-f]|1.",
                                "function": ".*"}, "physical_network": "physnet1"}]


def test_a_device_between_the_vfs_is_left_out(nova_sysfs: Any, nova_conf: Any) -> None:
    """PF0's 256 VFs fill bus 05 and half of bus 06; a NIC of another kind at
    06:12.0 (where no VF is) must not be taken."""
    inventory = INVENTORIES[(1, 256, 0)]
    nova_sysfs(inventory)
    pf = inventory.pfs[0]
    blind = generate_device_specs(inventory, {pf.address: "physnet1"})
    seen = generate_device_specs(inventory, {pf.address: "physnet1"},
                                 host_addresses=["0000:06:12.0"])
    devices = nova_devices(inventory, ["0000:06:12.0"])
    assert "0000:06:12.0" in nova_assigns(device_spec_lines(blind), devices)
    assert "0000:06:12.0" not in nova_assigns(device_spec_lines(seen), devices)
    assert set(nova_assigns(device_spec_lines(seen), devices)) == {vf.address for vf in pf.vfs}
    assert len(seen) == 2 and len(blind) == 1


def test_discovered_tree_and_its_other_devices(tmp_path: Path, nova_sysfs: Any,
                                               nova_conf: Any) -> None:
    """The same on a tree discovery reads (2 switchdev PFs, a legacy PF, and a
    plain NIC on the switchdev VFs' bus): pci-spec's inputs."""
    inventory = sim_tree_inventory(tmp_path, 2, 10, legacy=1, other_devices=("0000:05:0a.6",))
    assert inventory.pfs == sim_inventory(2, 10, 1).pfs  # what the other tests use
    nova_sysfs(inventory)
    addresses = pci_addresses(str(tmp_path))
    assert "0000:05:0a.6" in addresses and len(addresses) == 3 + 30 + 1
    physnet_map = {"0000:05:00.0": "physnet1", "0000:05:00.1": "physnet1"}
    specs = generate_device_specs(inventory, physnet_map, host_addresses=addresses)
    wanted = {vf.address: "physnet1" for pf in inventory.pfs[:2] for vf in pf.vfs}
    assert nova_assigns(device_spec_lines(specs), nova_devices(inventory, addresses)) == wanted
    # 20 VFs in 05:08.0-05:0a.3; without the plain NIC at 0a.6 one entry would do.
    assert len(specs) == 2
    assert len(generate_device_specs(inventory, physnet_map)) == 1


def test_every_entry_is_checked() -> None:
    inventory = sim_inventory(2, 8, legacy=1)
    pf0, pf1 = inventory.pfs[0], inventory.pfs[1]
    wanted = {vf.address: "physnet1" for vf in pf0.vfs}
    check_generated_specs([{"address": "0000:05:08.*", "physical_network": "physnet1"}],
                          wanted, inventory)
    with pytest.raises(SmartNICError, match="also matches 0000:05:00.0"):  # the PF
        check_generated_specs([{"address": "0000:05:*.*", "physical_network": "physnet1"}],
                              wanted, inventory)
    with pytest.raises(SmartNICError, match=f"also matches {pf1.vfs[0].address}"):
        check_generated_specs(
            [{"address": {"bus": "05", "slot": "0[89]"}, "physical_network": "physnet1"}],
            wanted, inventory)
    with pytest.raises(SmartNICError, match="not a wanted VF of physical network 'physnet2'"):
        check_generated_specs([{"address": "0000:05:08.*", "physical_network": "physnet2"}],
                              wanted, inventory)
    with pytest.raises(SmartNICError, match="misses 4 wanted VFs"):
        check_generated_specs([{"address": {"bus": "05", "slot": "08", "function": "[0-3]"},
                                "physical_network": "physnet1"}], wanted, inventory)
    with pytest.raises(SmartNICError, match="also matches 0000:99:00.0"):
        check_generated_specs([{"address": "*:*:*.*", "physical_network": "physnet1"}],
                              {}, inventory, host_addresses=["0000:99:00.0"])


@pytest.mark.parametrize(
    ("values", "width", "regex"),
    [
        ({0x08}, 2, "08"),
        (set(range(0x08, 0x20)), 2, "0[89a-f]|1."),
        ({0x05, 0x06, 0x07, 0x08, 0x09, 0x0A}, 2, "0[5-9a]"),
        ({0x09, 0x0A}, 2, "0[9a]"),
        ({0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17}, 2, "1[0-7]"),
        ({0, 2, 4}, 1, "[024]"),
        ({0x0005, 0x0105}, 4, "0[01]05"),
        ({0x01, 0x11, 0x12}, 2, "01|1[12]"),
    ],
)
def test_value_regexes_take_exactly_their_values(values: set[int], width: int,
                                                 regex: str) -> None:
    import re

    got = _values_regex(f"{v:0{width}x}" for v in values)
    assert got == regex
    everything = [f"{v:0{width}x}" for v in range(16 ** width)] if width < 4 else [
        f"{v:04x}" for v in range(0, 0x200)]
    assert {int(t, 16) for t in everything if re.match(got, t)} == values
