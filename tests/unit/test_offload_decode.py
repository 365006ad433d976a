"""Decoding ethtool's feature replies and devlink's eswitch replies
(:mod:`smartnic_vif.host.offload`), on messages encoded by pyroute2's own
netlink codecs: an encoder that is not ours."""

from __future__ import annotations

from typing import Any

import pytest
from pyroute2.netlink import genlmsg
from pyroute2.netlink.devlink import devlinkcmd
from pyroute2.netlink.generic.ethtool import ethtoolbitset, ethtoolheader

from smartnic_vif.host import offload
from smartnic_vif.host.offload import FeatureState, OffloadReadError


class features_msg(genlmsg):  # noqa: N801 - pyroute2's naming
    """ETHTOOL_MSG_FEATURES_GET's reply (pyroute2 has no class for it)."""

    nla_map = (
        ("ETHTOOL_A_FEATURES_UNSPEC", "none"),
        ("ETHTOOL_A_FEATURES_HEADER", "ethtoolheader"),
        ("ETHTOOL_A_FEATURES_HW", "ethtoolbitset"),
        ("ETHTOOL_A_FEATURES_WANTED", "ethtoolbitset"),
        ("ETHTOOL_A_FEATURES_ACTIVE", "ethtoolbitset"),
        ("ETHTOOL_A_FEATURES_NOCHANGE", "ethtoolbitset"),
    )
    ethtoolheader = ethtoolheader
    ethtoolbitset = ethtoolbitset


BITS = {"rx-checksum": 0, "hw-tc-offload": 1, "rx-gro": 2, "highdma": 3, "": 4}


def bitset(bits: dict[str, bool], nomask: bool = True) -> dict[str, Any]:
    """A verbose bitset as the kernel writes it: without a mask it lists only
    the bits that are set (no value flag); with one, every bit in the mask,
    a set one with the value flag."""
    listed = []
    for name, value in bits.items():
        if nomask and not value:
            continue
        fields: list[tuple[str, Any]] = [("ETHTOOL_A_BITSET_BIT_INDEX", BITS[name]),
                                         ("ETHTOOL_A_BITSET_BIT_NAME", name)]
        if value and not nomask:
            fields.append(("ETHTOOL_A_BITSET_BIT_VALUE", True))
        listed.append(("ETHTOOL_A_BITSET_BITS_BIT", {"attrs": fields}))
    attrs: list[tuple[str, Any]] = [("ETHTOOL_A_BITSET_SIZE", 64),
                                    ("ETHTOOL_A_BITSET_BITS", {"attrs": listed})]
    if nomask:
        attrs.insert(0, ("ETHTOOL_A_BITSET_NOMASK", True))
    return {"attrs": attrs}


def features_reply(hw: dict[str, bool], wanted: dict[str, bool], active: dict[str, bool],
                   nochange: dict[str, bool], nomask: bool = True) -> bytes:
    msg = features_msg()
    msg["cmd"] = offload.ETHTOOL_MSG_FEATURES_GET
    msg["version"] = offload.ETHTOOL_GENL_VERSION
    msg["attrs"] = [
        ("ETHTOOL_A_FEATURES_HEADER", {"attrs": [("ETHTOOL_A_HEADER_DEV_NAME", "rep0")]}),
        ("ETHTOOL_A_FEATURES_HW", bitset(hw, nomask)),
        ("ETHTOOL_A_FEATURES_WANTED", bitset(wanted, nomask)),
        ("ETHTOOL_A_FEATURES_ACTIVE", bitset(active, nomask)),
        ("ETHTOOL_A_FEATURES_NOCHANGE", bitset(nochange, nomask)),
    ]
    msg.encode()
    return bytes(msg.data)


@pytest.mark.parametrize("nomask", [True, False])
def test_features_from_reply(nomask: bool) -> None:
    # hw-tc-offload changeable and on; rx-gro changeable, asked for, but off
    # (the driver refused); rx-checksum on and fixed (not changeable);
    # highdma changeable but in nochange; the unnamed bit is left out.
    raw = features_reply(
        hw={"hw-tc-offload": True, "rx-gro": True, "highdma": True, "rx-checksum": False,
            "": True},
        wanted={"hw-tc-offload": True, "rx-gro": True, "rx-checksum": True, "highdma": False},
        active={"hw-tc-offload": True, "rx-gro": False, "rx-checksum": True, "highdma": False,
                "": True},
        nochange={"highdma": True, "hw-tc-offload": False},
        nomask=nomask,
    )
    features = offload.features_from_reply(raw)
    assert features == {
        "hw-tc-offload": FeatureState(active=True, fixed=False, requested=True),
        "rx-gro": FeatureState(active=False, fixed=False, requested=True),
        "rx-checksum": FeatureState(active=True, fixed=True, requested=True),
        "highdma": FeatureState(active=False, fixed=True, requested=False),
    }
    assert [features[n].describe() for n in ("hw-tc-offload", "rx-gro", "rx-checksum",
                                             "highdma")] == [
        "on", "off [requested on]", "on [fixed]", "off [fixed]"]


def test_a_feature_no_set_lists_is_off_and_fixed() -> None:
    # A veth: hw-tc-offload is in none of the sets (ethtool: "off [fixed]").
    raw = features_reply(hw={"rx-gro": True}, wanted={}, active={"rx-checksum": True},
                         nochange={})
    features = offload.features_from_reply(raw)
    assert "hw-tc-offload" not in features
    state = offload.feature(features, offload.HW_TC_OFFLOAD)
    assert state == FeatureState(active=False, fixed=True, requested=False)
    assert state.describe() == "off [fixed]"


def test_features_reply_without_an_active_set_is_refused() -> None:
    msg = features_msg()
    msg["cmd"] = offload.ETHTOOL_MSG_FEATURES_GET
    msg["attrs"] = [("ETHTOOL_A_FEATURES_HW", bitset({"rx-gro": True}))]
    msg.encode()
    with pytest.raises(OffloadReadError, match="no active set"):
        offload.features_from_reply(bytes(msg.data))


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
