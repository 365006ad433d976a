"""Whether virtio-forwarder has room for one more relay.

The daemon has a fixed number of relay slots (MAX_RELAYS, DPDK's
RTE_MAX_ETHPORTS: 32 in Debian's build), and its stats endpoint lists all of
them. A forwarder plug beyond that limit would fail at ADD_SOCK (ERROR 2), after
the VF's driver and settings and the OVS port were changed and had to be undone;
:func:`check_relay_room` refuses it before anything changes. The caller passes
the daemon's number of slots and the VFs that own one: those of the journal's
forwarder ports, whose slots stay theirs while a restarted daemon has not got
their relays back yet.
"""

from __future__ import annotations

from collections.abc import Iterable

from smartnic_vif.model.errors import SmartNICError
from smartnic_vif.model.types import PciAddress


class RelayLimitReached(SmartNICError):
    """Every relay slot of virtio-forwarder is in use."""

    def __init__(self, port_id: str, vf_address: str, used: int, total: int) -> None:
        self.port_id = port_id
        self.vf_address = vf_address
        self.used = used
        self.total = total
        super().__init__(
            f"port {port_id}: virtio-forwarder has no free relay for VF {vf_address}: "
            f"{used} of its {total} relays are in use ({total} is the daemon's limit, "
            "MAX_RELAYS); unplug another virtio-forwarder port first"
        )


def check_relay_room(
    port_id: str, vf_address: str, total: int, slot_owners: Iterable[str]
) -> None:
    """Raise :class:`RelayLimitReached` unless ``vf_address`` can have a relay
    slot: ``slot_owners`` (the VFs that own one, ``vf_address`` perhaps among
    them: a claim made before the plug is the slot it takes) leave one of the
    daemon's ``total`` free for it."""
    vf = PciAddress.parse(vf_address, "vf_address")
    others = {PciAddress.parse(a, "slot_owners") for a in slot_owners} - {vf}
    if len(others) >= total:
        raise RelayLimitReached(port_id, vf_address, len(others), total)
