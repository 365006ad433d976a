"""device_spec and alias: ours against Nova's own parsers on the same JSON and VFs.

Nova's ``PciDeviceSpec`` / ``Whitelist`` run unmodified; the two sysfs look-ups
its parser makes are answered from the test inventory (``nova_sysfs``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from nova import exception as nova_exception
from nova.pci import devspec as nova_devspec
from nova.pci import request as nova_pci_request
from nova.pci import whitelist as nova_whitelist

from smartnic_vif.decisions.devspec import (
    AddressGlob,
    AddressRegex,
    device_spec_lines,
    first_match,
    generate_alias,
    generate_device_specs,
    matches,
    parse_aliases,
    parse_device_spec,
    parse_device_specs,
)
from smartnic_vif.model.errors import InvalidValue, NotSwitchdev
from smartnic_vif.model.inventory import Inventory
from tests.decisions.hosts import LEGACY_PF, REMOTE_PF, SMARTNIC_PF, mixed_host, nova_dev_dict

HOST = mixed_host()
VFS = list(HOST.vfs())

SPEC_LINES = [
    '{"address": "0000:05:08.*", "physical_network": "physnet1"}',
    '{"address": "*:05:*.*"}',
    '{"address": "05:08.3"}',
    '{"address": "08.3"}',
    '{"address": "*:06:"}',
    '{"address": ":06:10"}',
    '{"address": "0000:05:09.0", "trusted": "true"}',
    '{"address": "0000:05:00.0", "physical_network": "physnet1"}',  # a PF: its VFs
    '{"address": "0000:06:00.0"}',
    '{"address": "0000:0A:00.0"}',
    '{"address": "0x0000:0x81:0x0a.0x1"}',
    '{"address": {"domain": ".*", "bus": "05", "slot": "0[89]", "function": "[0-3]"}}',
    '{"address": {"bus": "0"}}',  # re.match is a prefix match: buses 05 and 06
    '{"address": {"bus": "8"}}',
    '{"address": {"domain": "0000", "bus": "05", "slot": "00", "function": "0"}}',
    '{"address": {"domain": "0000", "bus": "81", "slot": "0a", "function": "[13]$"}}',
    '{"vendor_id": "19ee", "product_id": "6003"}',
    '{"vendor_id": "0x15B3"}',
    '{"product_id": "1018", "address": "*:*:*.*"}',
    '{"vendor_id": "8086"}',
    '{"devname": "enp5s0np0", "physical_network": "physnet1"}',  # PF uplink
    '{"devname": "enp6s0f0v1"}',  # a legacy VF's own netdev
    '{"devname": "enp129s0np0r2"}',  # a representor: resolves to its PF
    '{"devname": "nosuch0"}',
    '{"address": "0000:05:08.1", "remote_managed": "true"}',
    '{"vendor_id": "*", "product_id": "*"}',
    '[{"address": "0000:06:10.*"}, {"address": "0000:05:09.*", "trusted": "false"}]',
    '{"address": "0000:05:08.1", "managed": "yes", "live_migratable": "no"}',
]


def nova_specs(line: str) -> list[nova_devspec.PciDeviceSpec]:
    return nova_whitelist.Whitelist([line]).specs


@pytest.mark.parametrize("line", SPEC_LINES)
def test_matches_the_same_vfs_as_nova(line: str, nova_sysfs: Any, nova_conf: Any) -> None:
    nova_sysfs(HOST)
    theirs_specs = nova_specs(line)
    ours_specs = parse_device_specs([line])
    assert len(ours_specs) == len(theirs_specs)
    for ours, theirs in zip(ours_specs, theirs_specs, strict=True):
        nova_matched = [vf.address for vf in VFS if theirs.match(nova_dev_dict(vf))]
        our_matched = [vf.address for vf in VFS if matches(ours, vf, HOST)]
        assert our_matched == nova_matched
        assert ours.tags == theirs.get_tags()
        assert ours.vendor_id == theirs.vendor_id and ours.product_id == theirs.product_id


def test_whitelist_as_a_whole_gives_the_same_tags(nova_sysfs: Any, nova_conf: Any) -> None:
    nova_sysfs(HOST)
    # Order matters: the first matching entry gives a VF its tags.
    lines = [
        '{"address": "0000:05:09.0", "trusted": "true"}',
        '[{"address": "0000:06:10.*"}, {"address": "0000:05:09.*", "trusted": "false"}]',
        '{"address": "0000:05:08.*", "physical_network": "physnet1"}',
        '{"devname": "enp129s0np0", "physical_network": "physnet2"}',
        '{"vendor_id": "*", "product_id": "*"}',
    ]
    whitelist = nova_whitelist.Whitelist(lines)
    ours = parse_device_specs(lines)
    seen_tags = set()
    for vf in VFS:
        theirs = whitelist.device_assignable(nova_dev_dict(vf))
        mine = first_match(ours, vf, HOST)
        assert (theirs is None) == (mine is None), vf.address
        if theirs is not None and mine is not None:
            assert mine.tags == theirs.get_tags(), vf.address
            seen_tags.add(json.dumps(mine.tags, sort_keys=True))
    assert len(seen_tags) == 5  # every entry decided some VF


def test_pf_address_and_devname_stand_for_the_pfs_vfs() -> None:
    by_pf = parse_device_spec({"address": SMARTNIC_PF})
    by_name = parse_device_spec({"devname": "enp5s0np0"})
    smartnic = [vf for vf in VFS if vf.pf_address == SMARTNIC_PF]
    others = [vf for vf in VFS if vf.pf_address != SMARTNIC_PF]
    assert all(matches(by_pf, vf) for vf in smartnic)
    assert all(matches(by_name, vf, HOST) for vf in smartnic)
    assert not any(matches(by_pf, vf) or matches(by_name, vf, HOST) for vf in others)
    # Without the inventory a PF's netdev name cannot be resolved.
    assert not matches(by_name, smartnic[0])


def test_parsed_forms() -> None:
    glob = parse_device_spec({"address": "5:8.*"}).address
    assert glob == AddressGlob("*", "05", "08", "*")
    regex = parse_device_spec({"address": {"bus": "05"}}).address
    assert regex == AddressRegex(".*", "05", ".*", ".*")
    spec = parse_device_spec({"vendor_id": " 19EE ", "physical_network": "physnet1",
                              "trusted": "yes", "remote_managed": "false"})
    assert spec.vendor_id == "19ee" and spec.product_id == "*"
    assert spec.physical_network == "physnet1" and spec.trusted is True
    assert spec.remote_managed is False
    assert parse_device_spec({}).physical_network is None and parse_device_spec({}).trusted is None


def test_a_single_line_string_is_one_entry() -> None:
    assert len(parse_device_specs('{"address": "0000:05:08.*"}')) == 1
    assert len(parse_device_specs('[{"address": "05:08.1"}, {"address": "05:08.2"}]')) == 2


def test_round_trip_through_config_lines(nova_sysfs: Any, nova_conf: Any) -> None:
    nova_sysfs(HOST)
    parsed = parse_device_specs(SPEC_LINES)
    again = parse_device_specs(device_spec_lines(parsed))
    assert again == [
        type(p)(p.vendor_id, p.product_id, p.address, p.devname, p.tags, a.source)
        for p, a in zip(parsed, again, strict=True)
    ]
    # and Nova reads our lines back to the same specs
    for spec, line in zip(parsed, device_spec_lines(parsed), strict=True):
        (theirs,) = nova_specs(line)
        assert [matches(spec, vf, HOST) for vf in VFS] == [
            theirs.match(nova_dev_dict(vf)) for vf in VFS
        ]


BAD_SPECS = [
    ("not json", "not valid JSON"),
    ("5", "JSON object or a list"),
    ('["x"]', "JSON object"),
    ('{"address": "0000:05:08.8"}', "function"),
    ('{"address": "0000:05:20.0"}', "slot"),
    ('{"address": "0000:105:08.0"}', "bus"),
    ('{"address": "10000:05:08.0"}', "domain"),
    ('{"address": "1:2:3:4.0"}', "at most"),
    ('{"address": "0000:05:0g.0"}', "hex"),
    ('{"address": "0000:05:0*.0"}', "hex"),
    ('{"address": {"bus": "("}}', "regex"),
    ('{"vendor_id": "12345"}', "vendor_id"),
    ('{"product_id": "xyz"}', "product_id"),
    ('{"address": "0000:05:08.1", "devname": "eth0"}', "not both"),
    ('{"address": "0000:05:08.1", "managed": "maybe"}', "managed"),
]


@pytest.mark.parametrize(("line", "why"), BAD_SPECS)
def test_bad_specs_refused_like_nova(line: str, why: str, nova_conf: Any) -> None:
    with pytest.raises(InvalidValue) as exc:
        parse_device_specs([line])
    assert why in str(exc.value) and "[pci] device_spec entry 0" in str(exc.value)
    with pytest.raises(
        (nova_exception.PciConfigInvalidSpec, nova_exception.PciDeviceWrongAddressFormat,
         nova_exception.PciDeviceInvalidDeviceName)
    ):
        nova_whitelist.Whitelist([line])


@pytest.mark.parametrize(
    "line",
    [
        '{"address": 5}',
        '{"address": {"bus": 5}}',
        '{"address": {"bus": "05", "sloth": "1"}}',
        '{"vendor_id": 6003}',
        '{"devname": ""}',
        '{"address": "0000:05:08.1", "trusted": "maybe"}',
    ],
)
def test_stricter_than_nova(line: str) -> None:
    """Entries Nova mis-parses, crashes on or reads silently as false."""
    with pytest.raises(InvalidValue):
        parse_device_specs([line])


def test_second_line_is_named_in_the_error() -> None:
    with pytest.raises(InvalidValue, match="entry 1 item 1"):
        parse_device_specs(['{"address": "05:08.1"}', '[{}, {"address": "05:08.9"}]'])


# --- generation -------------------------------------------------------------


def test_per_vf_specs_are_exact_addresses() -> None:
    specs = generate_device_specs(HOST, {SMARTNIC_PF: "physnet1", "enp129s0np0": "physnet2"},
                                  per_vf=True)
    assert specs == [
        {"address": "0000:05:08.*", "physical_network": "physnet1"},
        {"address": "0000:05:09.0", "physical_network": "physnet1"},
        {"address": "0000:05:09.1", "physical_network": "physnet1"},
        {"address": "0000:05:09.2", "physical_network": "physnet1"},
        {"address": "0000:05:09.3", "physical_network": "physnet1"},
        {"address": "0000:81:0a.0", "physical_network": "physnet2"},
        {"address": "0000:81:0a.1", "physical_network": "physnet2"},
        {"address": "0000:81:0a.2", "physical_network": "physnet2"},
        {"address": "0000:81:0a.3", "physical_network": "physnet2"},
    ]
    assert not any("vendor_id" in s or "product_id" in s for s in specs)


def test_tunnel_only_pf_gets_no_physnet_tag() -> None:
    specs = generate_device_specs(HOST, {"0000:81:00.0": None})
    assert specs and all(set(s) == {"address"} for s in specs)


@pytest.mark.parametrize("per_vf", [False, True])
@pytest.mark.parametrize(
    "physnet_map",
    [
        {SMARTNIC_PF: "physnet1"},
        {"enp5s0np0": "physnet1", "0000:81:00.0": "physnet2"},
        {"0000:81:00.0": None},
        {"0000:05:00.0": "physnet1", "enp129s0np0": "physnet1"},
    ],
)
def test_nova_accepts_generated_specs_and_matches_the_same_vfs(
    physnet_map: dict[str, str | None], per_vf: bool, nova_sysfs: Any, nova_conf: Any
) -> None:
    nova_sysfs(HOST)
    lines = device_spec_lines(generate_device_specs(HOST, physnet_map, per_vf=per_vf))
    whitelist = nova_whitelist.Whitelist(lines)  # raises if Nova refuses one
    ours = parse_device_specs(lines)
    wanted_pfs = {HOST.pf(k).address if ":" in k else _pf_by_netdev(HOST, k)
                  for k in physnet_map}
    for vf in VFS:
        theirs = whitelist.device_assignable(nova_dev_dict(vf))
        mine = first_match(ours, vf, HOST)
        assert (theirs is not None) == (mine is not None) == (vf.pf_address in wanted_pfs)
        if theirs is not None and mine is not None:
            assert theirs.get_tags() == mine.tags
            assert mine.physical_network == physnet_map.get(
                vf.pf_address, physnet_map.get(HOST.pf(vf.pf_address).netdev or "")
            )


def _pf_by_netdev(inventory: Inventory, name: str) -> str:
    return next(pf.address for pf in inventory.pfs if pf.netdev == name)


def test_generation_refuses_legacy_and_unknown_pfs() -> None:
    with pytest.raises(NotSwitchdev, match=LEGACY_PF):
        generate_device_specs(HOST, {LEGACY_PF: "physnet1"})
    with pytest.raises(InvalidValue, match="names no physical function") as exc:
        generate_device_specs(HOST, {"0000:42:00.0": "physnet1"})
    assert SMARTNIC_PF in str(exc.value)  # lists what there is
    with pytest.raises(InvalidValue, match="names no physical function"):
        generate_device_specs(HOST, {"eth9": "physnet1"})
    with pytest.raises(InvalidValue, match="also mapped"):
        generate_device_specs(HOST, {SMARTNIC_PF: "physnet1", "enp5s0np0": "physnet2"})
    with pytest.raises(InvalidValue, match="physical network name"):
        generate_device_specs(HOST, {SMARTNIC_PF: ""})
    assert generate_device_specs(HOST, {}) == []


# --- aliases ---------------------------------------------------------------

ALIAS_SETS = [
    ['{"name": "a", "vendor_id": "19ee", "product_id": "6003"}'],
    [
        '{"name": "vf", "vendor_id": "19ee", "product_id": "6003", "device_type": "type-VF",'
        ' "numa_policy": "preferred"}',
        '{"name": "vf", "vendor_id": "15b3", "product_id": "1018", "device_type": "type-VF",'
        ' "numa_policy": "preferred"}',
        '{"name": " pf ", "vendor_id": "15B3", "product_id": "1017", "device_type": "type-PF",'
        ' "live_migratable": "yes", "capability_type": "pci"}',
    ],
]
BAD_ALIAS_SETS = [
    ['{"vendor_id": "19ee", "product_id": "6003"}'],  # no name
    ['{"name": "a", "vendor_id": "19ee"}'],  # no product id
    ['{"name": "a", "vendor_id": "19e", "product_id": "6003"}'],
    ['{"name": "a", "vendor_id": "19ee", "product_id": "6003", "device_type": "type-X"}'],
    ['{"name": "a", "vendor_id": "19ee", "product_id": "6003", "numa_policy": "strict"}'],
    ['{"name": "a", "vendor_id": "19ee", "product_id": "6003", "colour": "red"}'],
    ['{"name": "a", "vendor_id": "19ee", "product_id": "6003", "live_migratable": "maybe"}'],
    ['{"name": "", "vendor_id": "19ee", "product_id": "6003"}'],
    ['[{"name": "a", "vendor_id": "19ee", "product_id": "6003"}]'],
    ['not json'],
    [
        '{"name": "a", "vendor_id": "19ee", "product_id": "6003", "numa_policy": "required"}',
        '{"name": "a", "vendor_id": "15b3", "product_id": "1018"}',
    ],
    [
        '{"name": "a", "vendor_id": "19ee", "product_id": "6003", "device_type": "type-VF"}',
        '{"name": "a", "vendor_id": "15b3", "product_id": "1018", "device_type": "type-PF"}',
    ],
    [
        '{"name": "a", "vendor_id": "19ee", "product_id": "6003"}',
        '{"name": "a", "vendor_id": "15b3", "product_id": "1018"}',
    ],
]


def nova_aliases(nova_conf: Any, lines: list[str]) -> dict[str, Any]:
    nova_conf.config(alias=lines, group="pci")
    nova_pci_request.get_alias_from_config.cache_clear()
    return nova_pci_request.get_alias_from_config()


@pytest.mark.parametrize("lines", ALIAS_SETS)
def test_aliases_parse_like_nova(lines: list[str], nova_conf: Any) -> None:
    theirs = nova_aliases(nova_conf, lines)
    ours = parse_aliases(lines)
    assert {n: (a.numa_policy, list(a.specs)) for n, a in ours.items()} == theirs


@pytest.mark.parametrize("lines", BAD_ALIAS_SETS)
def test_bad_aliases_refused_like_nova(lines: list[str], nova_conf: Any) -> None:
    with pytest.raises(nova_exception.PciInvalidAlias):
        nova_aliases(nova_conf, lines)
    with pytest.raises(InvalidValue, match=r"\[pci\] alias entry"):
        parse_aliases(lines)


def test_generated_alias_accepted_by_nova(nova_conf: Any) -> None:
    entries = generate_alias(HOST, "smartnic", numa_policy="preferred")
    assert entries == [
        {"name": "smartnic", "vendor_id": "19ee", "product_id": "6003",
         "device_type": "type-VF", "numa_policy": "preferred"}
    ]
    lines = [json.dumps(e) for e in entries]
    theirs = nova_aliases(nova_conf, lines)
    assert theirs == {"smartnic": ("preferred", [
        {"vendor_id": "19ee", "product_id": "6003", "dev_type": "type-VF"}])}
    assert parse_aliases(lines)["smartnic"].dev_type == "type-VF"
    # Legacy VFs too, when asked: two vendor/product pairs ORed under one name.
    both = generate_alias(HOST, switchdev_only=False)
    assert [(e["vendor_id"], e["product_id"]) for e in both] == [
        ("15b3", "1018"), ("19ee", "6003")]
    assert nova_aliases(nova_conf, [json.dumps(e) for e in both])["smartnic-vf"][0] == "legacy"


def test_generate_alias_bad_input() -> None:
    with pytest.raises(InvalidValue, match="alias name"):
        generate_alias(HOST, "a:b")
    with pytest.raises(InvalidValue, match="numa_policy"):
        generate_alias(HOST, numa_policy="strict")
    legacy_only = Inventory("/", (HOST.pf(LEGACY_PF),))
    with pytest.raises(InvalidValue, match="no switchdev VFs"):
        generate_alias(legacy_only)
    assert REMOTE_PF  # the host has more than one SmartNIC
