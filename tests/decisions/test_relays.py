"""The relay limit of virtio-forwarder, decided before a forwarder plug."""

from __future__ import annotations

import pytest

from smartnic_vif.decisions.relays import RelayLimitReached, check_relay_room
from smartnic_vif.model.errors import SmartNICError

VF = "0000:05:08.1"
OTHERS = [f"0000:05:09.{n}" for n in range(4)]


def test_a_free_slot_is_room() -> None:
    check_relay_room("p1", VF, total=4, slot_owners=OTHERS[:3])
    check_relay_room("p1", VF, total=32, slot_owners=[])


def test_no_free_slot_is_refused_naming_the_limit() -> None:
    with pytest.raises(RelayLimitReached) as full:
        check_relay_room("p1", VF, total=4, slot_owners=OTHERS)
    assert isinstance(full.value, SmartNICError)
    assert (full.value.used, full.value.total) == (4, 4)
    text = str(full.value)
    assert "p1" in text and VF in text and "4 of its 4 relays" in text
    assert "limit" in text


def test_the_ports_own_claim_is_its_own_slot_not_another() -> None:
    # attach claims the VF before it plugs: that claim is the slot it takes,
    # so it neither counts against it nor lets it past a full daemon.
    check_relay_room("p1", VF, total=4, slot_owners=[*OTHERS[:3], VF])
    with pytest.raises(RelayLimitReached, match="4 of its 4 relays"):
        check_relay_room("p1", VF, total=4, slot_owners=[*OTHERS, VF])


def test_addresses_in_the_daemons_form_are_the_same_vf() -> None:
    check_relay_room("p1", VF, total=4, slot_owners=[*OTHERS[:3], VF.upper()])


def test_a_smaller_daemon_build() -> None:
    with pytest.raises(RelayLimitReached, match="1 of its 1 relays"):
        check_relay_room("p2", VF, total=1, slot_owners=["0000:05:09.0"])
