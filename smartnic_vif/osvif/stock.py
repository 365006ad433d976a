"""Normal ports: os-vif's stock ``ovs`` plugin, run on this project's terms.

The stock plugin does the work (the OVS port and its external_ids, hybrid
bridges, per-port bridges, isolation, QoS, tap deletion on unplug),
unchanged. Its OVSDB helper is ours (:class:`StockOVSDB`, a subclass of
os-vif's), and differs in three ways:

- it uses our OVSDB connection when both point at the same server: each
  IDL connection replicates the database and parses every update (os-vif's
  own replicates every Interface column with its statistics), which on a
  busy host costs more CPU than the plugs;
- ``ensure_ovs_bridge`` leaves an existing bridge alone: the stock helper
  writes the VIF's datapath_type onto it, which could flip a userspace bridge
  to the kernel datapath;
- the MTU of the port's device is set by our privileged helper: os-vif's
  asks a privsep daemon of its own, which opens a pyroute2 IPRoute twice per
  call (to look the device up, then to change it), each one an asyncio loop
  of its own; that took 2 ms of a 5 ms plug here, ours takes one netlink
  request on a kept socket. The result is the same: the MTU set when the
  device exists, nothing done when it does not.
"""

from __future__ import annotations

from typing import Any

from vif_plug_ovs import constants, ovs
from vif_plug_ovs.ovsdb import ovsdb_lib

from smartnic_vif.host.backend import Host

# Interface types whose MTU os-vif sets in OVSDB (mtu_request), not on a device.
_MTU_IN_OVSDB = frozenset(
    {constants.OVS_VHOSTUSER_INTERFACE_TYPE, constants.OVS_VHOSTUSER_CLIENT_INTERFACE_TYPE}
)


class StockOVSDB(ovsdb_lib.BaseOVS):  # type: ignore[misc]
    """The stock plugin's OVSDB helper, on our connection when that is the
    same server, and never changing a bridge that exists."""

    def __init__(self, config: Any, host: Host, own_connection: str) -> None:
        super().__init__(config)
        self._host = host
        self.shared = (
            config.ovsdb_interface == "native" and config.ovsdb_connection == own_connection
        )

    @property
    def ovsdb(self) -> Any:
        if self.shared:
            # Asked on every use: our connection may have been replaced since
            # (ovsdb-server restarted).
            return self._host.ovsdb.api
        return super().ovsdb

    def ensure_ovs_bridge(self, bridge: str, datapath_type: str | None) -> Any:
        # Read from our replica: no transaction, no wait for ovs-vswitchd.
        # On its own connection the stock helper's transaction stays, with
        # the VIF's datapath_type already pinned to the bridge's (see
        # pinned_datapath_type).
        if self.shared and self._host.ovsdb.bridge_exists(bridge):
            return None
        return super().ensure_ovs_bridge(bridge, datapath_type)

    def update_device_mtu(
        self, txn: Any, dev: str, mtu: int | None, interface_type: str | None = None
    ) -> None:
        if not mtu or interface_type in _MTU_IN_OVSDB:
            super().update_device_mtu(txn, dev, mtu, interface_type)
            return
        self._host.set_mtu(dev, mtu)


def load(host: Host, own_connection: str) -> Any:
    """os-vif's ``ovs`` plugin, with :class:`StockOVSDB` as its OVSDB helper."""
    plugin = ovs.OvsPlugin.load("ovs")
    plugin.ovsdb = StockOVSDB(plugin.config, host, own_connection)
    return plugin


def pinned_datapath_type(existing: str | None, default: str) -> str:
    """The datapath_type a normal VIF must carry to leave bridge ``existing``
    (its stored datapath_type, "" meaning system; None: no such bridge) as it
    is; ``default`` for a bridge yet to be made."""
    if existing is None:
        return default
    return existing or constants.OVS_DATAPATH_SYSTEM
