"""Decoding ethtool's feature replies and devlink's eswitch replies
(:mod:`smartnic_vif.host.offload`), on messages encoded by pyroute2's own
netlink codecs: an encoder that is not ours."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from pyroute2.netlink import genlmsg
from pyroute2.netlink.devlink import devlinkcmd
from pyroute2.netlink.generic.ethtool import ethtool_strset_msg, ethtoolbitset, ethtoolheader

from smartnic_vif.host import offload
from smartnic_vif.host.offload import FeatureState, OffloadReadError


class compact_bitset(ethtoolbitset):  # noqa: N801 - pyroute2's naming
    """A compact bitset: pyroute2 has its value as text; here, raw words."""

    nla_map = (
        ("ETHTOOL_A_BITSET_UNSPEC", "none"),
        ("ETHTOOL_A_BITSET_NOMASK", "flag"),
        ("ETHTOOL_A_BITSET_SIZE", "uint32"),
        ("ETHTOOL_A_BITSET_BITS", "none"),
        ("ETHTOOL_A_BITSET_VALUE", "cdata"),
        ("ETHTOOL_A_BITSET_MASK", "cdata"),
    )


class features_msg(genlmsg):  # noqa: N801 - pyroute2's naming
    """ETHTOOL_MSG_FEATURES_GET's reply (pyroute2 has no class for it)."""

    nla_map = (
        ("ETHTOOL_A_FEATURES_UNSPEC", "none"),
        ("ETHTOOL_A_FEATURES_HEADER", "ethtoolheader"),
        ("ETHTOOL_A_FEATURES_HW", "compact_bitset"),
        ("ETHTOOL_A_FEATURES_WANTED", "compact_bitset"),
        ("ETHTOOL_A_FEATURES_ACTIVE", "compact_bitset"),
        ("ETHTOOL_A_FEATURES_NOCHANGE", "compact_bitset"),
    )
    ethtoolheader = ethtoolheader
    compact_bitset = compact_bitset


# The feature names by bit, as a kernel's string set gives them: bit 33 is
# in the second 32-bit word, bit 4 has no name.
NAMES = ["rx-checksum", "hw-tc-offload", "rx-gro", "highdma", ""] + [
    f"feature-{i}" for i in range(5, 33)] + ["tx-nocache-copy"]
BITS = {name: bit for bit, name in enumerate(NAMES)}


def bitset(bits: set[str | int]) -> dict[str, Any]:
    """A compact bitset as the kernel writes the features sets: no mask,
    the size in bits, the value as 32-bit words in host order."""
    value = 0
    for bit in bits:
        value |= 1 << (bit if isinstance(bit, int) else BITS[bit])
    words = -(-len(NAMES) // 32)
    return {"attrs": [("ETHTOOL_A_BITSET_NOMASK", True),
                      ("ETHTOOL_A_BITSET_SIZE", len(NAMES)),
                      ("ETHTOOL_A_BITSET_VALUE", struct.pack(
                          f"={words}I", *((value >> (32 * i)) & 0xFFFFFFFF
                                          for i in range(words))))]}


def features_reply(hw: set[str | int], wanted: set[str | int], active: set[str | int],
                   nochange: set[str | int] | None = None) -> bytes:
    msg = features_msg()
    msg["cmd"] = offload.ETHTOOL_MSG_FEATURES_GET
    msg["version"] = offload.ETHTOOL_GENL_VERSION
    msg["attrs"] = [
        ("ETHTOOL_A_FEATURES_HEADER", {"attrs": [("ETHTOOL_A_HEADER_DEV_NAME", "rep0")]}),
        ("ETHTOOL_A_FEATURES_HW", bitset(hw)),
        ("ETHTOOL_A_FEATURES_WANTED", bitset(wanted)),
        ("ETHTOOL_A_FEATURES_ACTIVE", bitset(active)),
    ]
    if nochange is not None:
        msg["attrs"].append(("ETHTOOL_A_FEATURES_NOCHANGE", bitset(nochange)))
    msg.encode()
    return bytes(msg.data)


def test_feature_sets_from_reply() -> None:
    # hw-tc-offload changeable and on; rx-gro changeable, asked for, but off
    # (the driver refused); rx-checksum on and fixed (not changeable);
    # highdma changeable but in nochange; tx-nocache-copy (second word)
    # changeable and on but not asked for; the unnamed bit is left out.
    raw = features_reply(
        hw={"hw-tc-offload", "rx-gro", "highdma", 4, "tx-nocache-copy"},
        wanted={"hw-tc-offload", "rx-gro", "rx-checksum"},
        active={"hw-tc-offload", "rx-checksum", 4, "tx-nocache-copy"},
        nochange={"highdma"},
    )
    features = offload.feature_sets_from_reply(raw).named(NAMES)
    assert "" not in features and len(features) == len(NAMES) - 1
    assert {n: features[n] for n in ("hw-tc-offload", "rx-gro", "rx-checksum", "highdma",
                                     "tx-nocache-copy", "feature-5")} == {
        "hw-tc-offload": FeatureState(active=True, fixed=False, requested=True),
        "rx-gro": FeatureState(active=False, fixed=False, requested=True),
        "rx-checksum": FeatureState(active=True, fixed=True, requested=True),
        "highdma": FeatureState(active=False, fixed=True, requested=False),
        "tx-nocache-copy": FeatureState(active=True, fixed=False, requested=False),
        "feature-5": FeatureState(active=False, fixed=True, requested=False),
    }
    assert [features[n].describe() for n in ("hw-tc-offload", "rx-gro", "rx-checksum",
                                             "highdma", "tx-nocache-copy")] == [
        "on", "off [requested on]", "on [fixed]", "off [fixed]", "on [requested off]"]


def test_a_feature_the_reply_does_not_know_is_off_and_fixed() -> None:
    # A veth: hw-tc-offload is set nowhere (ethtool: "off [fixed]"); an
    # older kernel's reply may also not reach a newer feature's bit.
    raw = features_reply(hw={"rx-gro"}, wanted=set(), active={"rx-checksum"})
    features = offload.feature_sets_from_reply(raw).named(NAMES)
    assert features["hw-tc-offload"] == FeatureState(active=False, fixed=True, requested=False)
    assert offload.feature(features, "not-a-feature").describe() == "off [fixed]"


def test_features_reply_without_an_active_set_is_refused() -> None:
    msg = features_msg()
    msg["cmd"] = offload.ETHTOOL_MSG_FEATURES_GET
    msg["attrs"] = [("ETHTOOL_A_FEATURES_HW", bitset({"rx-gro"}))]
    msg.encode()
    with pytest.raises(OffloadReadError, match="no active set"):
        offload.feature_sets_from_reply(bytes(msg.data))


def strset_reply(strings: list[tuple[int, str]]) -> bytes:
    msg = ethtool_strset_msg()
    msg["cmd"] = offload.ETHTOOL_MSG_STRSET_GET
    msg["version"] = offload.ETHTOOL_GENL_VERSION
    msg["attrs"] = [("ETHTOOL_A_STRSET_STRINGSETS", {"attrs": [
        ("ETHTOOL_A_STRINGSETS_STRINGSET", {"attrs": [
            ("ETHTOOL_A_STRINGSET_ID", offload.ETH_SS_FEATURES),
            ("ETHTOOL_A_STRINGSET_COUNT", len(strings)),
            ("ETHTOOL_A_STRINGSET_STRINGS", {"attrs": [
                ("ETHTOOL_A_STRINGS_STRING", {"attrs": [("ETHTOOL_A_STRING_INDEX", i),
                                                        ("ETHTOOL_A_STRING_VALUE", name)]})
                for i, name in strings]}),
        ]})]})]
    msg.encode()
    return bytes(msg.data)


def test_string_set_from_reply_by_index() -> None:
    # In any order; an index the reply skips has no name.
    raw = strset_reply([(2, "rx-gro"), (0, "rx-checksum"), (3, "hw-tc-offload")])
    assert offload.string_set_from_reply(raw) == ["rx-checksum", "", "rx-gro", "hw-tc-offload"]
    with pytest.raises(OffloadReadError, match="names no string"):
        offload.string_set_from_reply(strset_reply([]))


def eswitch_reply(attrs: list[tuple[str, Any]]) -> bytes:
    msg = devlinkcmd()
    msg["cmd"] = offload.DEVLINK_CMD_ESWITCH_GET
    msg["version"] = offload.DEVLINK_GENL_VERSION
    msg["attrs"] = [("DEVLINK_ATTR_BUS_NAME", "pci"),
                    ("DEVLINK_ATTR_DEV_NAME", "0000:05:00.0"), *attrs]
    msg.encode()
    return bytes(msg.data)


@pytest.mark.parametrize(("mode", "expected"), [(0, "legacy"), (1, "switchdev"), (7, "mode 7")])
def test_eswitch_mode_from_reply(mode: int, expected: str) -> None:
    raw = eswitch_reply([("DEVLINK_ATTR_ESWITCH_MODE", mode),
                         ("DEVLINK_ATTR_ESWITCH_INLINE_MODE", 3)])
    assert offload.eswitch_mode_from_reply(raw) == expected


def test_eswitch_reply_without_a_mode_is_refused() -> None:
    with pytest.raises(OffloadReadError, match="no mode"):
        offload.eswitch_mode_from_reply(eswitch_reply([]))


def test_attributes_stop_at_a_truncated_attribute() -> None:
    whole = offload._attr(1, b"abcd") + offload._attr(2 | offload.NLA_F_NESTED, b"xy")
    assert list(offload.attributes(whole)) == [(1, b"abcd"), (2, b"xy")]
    # The second attribute says it is longer than what is left.
    assert list(offload.attributes(whole[:-4])) == [(1, b"abcd")]
