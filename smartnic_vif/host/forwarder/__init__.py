"""The virtio-forwarder backend: a ZeroMQ/protobuf client of the XVIO daemon.

Ports in forwarder mode get a virtio NIC on a vhost-user socket; the
virtio-forwarder daemon relays that socket to an SR-IOV VF. This package is the
only code that talks to the daemon (see :mod:`.client`).
"""

from __future__ import annotations

from smartnic_vif.host.forwarder.client import (
    DEFAULT_PORT_CONTROL_ENDPOINT,
    DEFAULT_STATS_ENDPOINT,
    DEFAULT_TIMEOUT,
    DirectionStats,
    ForwarderClient,
    ForwarderError,
    ForwarderProtocolError,
    ForwarderTimeout,
    RelayStats,
    RelayUsage,
)

__all__ = [
    "DEFAULT_PORT_CONTROL_ENDPOINT",
    "DEFAULT_STATS_ENDPOINT",
    "DEFAULT_TIMEOUT",
    "DirectionStats",
    "ForwarderClient",
    "ForwarderError",
    "ForwarderProtocolError",
    "ForwarderTimeout",
    "RelayStats",
    "RelayUsage",
]
