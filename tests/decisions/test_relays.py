"""The relay limit of virtio-forwarder, decided before a forwarder plug."""

from __future__ import annotations

import pytest

from smartnic_vif.decisions.relays import RelayLimitReached, check_relay_room
from smartnic_vif.model.errors import SmartNICError

VF = "0000:05:08.1"


def test_a_free_slot_is_room() -> None:
    check_relay_room("p1", VF, used=31, total=32, relayed_vfs=["0000:05:08.2"])
    check_relay_room("p1", VF, used=0, total=32, relayed_vfs=[])


def test_no_free_slot_is_refused_naming_the_limit() -> None:
    with pytest.raises(RelayLimitReached) as full:
        check_relay_room("p1", VF, used=32, total=32, relayed_vfs=["0000:05:09.0"])
    assert isinstance(full.value, SmartNICError)
    assert (full.value.used, full.value.total) == (32, 32)
    text = str(full.value)
    assert "p1" in text and VF in text and "32 of its 32 relays" in text
    assert "limit" in text


def test_a_vf_that_has_its_relay_needs_no_slot() -> None:
    # The daemon's form of the address (upper case) is the same VF.
    check_relay_room("p1", VF, used=4, total=4, relayed_vfs=["0000:05:08.1".upper()])


def test_a_smaller_daemon_build() -> None:
    with pytest.raises(RelayLimitReached, match="1 of its 1 relays"):
        check_relay_room("p2", VF, used=1, total=1, relayed_vfs=["0000:05:09.0"])
