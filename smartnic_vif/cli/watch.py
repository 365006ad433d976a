"""``smartnic-vif reconcile --watch``: repair plugged ports as the host changes.

A long-running loop for a systemd service (``etc/smartnic-vif-reconcile.service``).
It runs a full reconcile at start (interrupted work too), then every
``--interval`` seconds repairs what drifted on plugged ports, and between
those passes polls, every :data:`POLL` seconds, two things that mean ports need
repairing now:

- **virtio-forwarder**: its stats answer (the relays in use: socket path and
  VF). The daemon keeps its relays only in memory, so a restart shows as
  relays gone, or as a daemon that stops answering and answers again. Either
  way every plugged forwarder port is repaired (the repair re-adds only
  the relays that are missing).
- **OVSDB**: the IDL connection's session seqno, which changes each time the
  connection is lost and made again (ovsdb-server or the whole of OVS
  restarted). Once the copy of the database is complete again, every plugged
  port is repaired.

Between passes it holds no lock: a repair takes each VF's lock only while it
repairs that port. SIGTERM or SIGINT ends the loop after the repair in progress
(exit 0). Under systemd ``Type=notify`` it says READY once the first pass is
done.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from types import FrameType
from typing import Any

from smartnic_vif.cli.main import EXIT_OK
from smartnic_vif.model.errors import HostOperationError

LOG = logging.getLogger(__name__)

# Seconds between two looks at the forwarder and OVSDB.
POLL = 0.25
# Seconds to wait for a stats answer while polling: short, so that a daemon
# that is gone does not delay the OVSDB check (a daemon that comes back
# answers the pending request at once).
STATS_TIMEOUT = 0.5


# The relays in use, each as (relay slot, VF, vhost-user socket).
RelaySet = frozenset[tuple[int, str | None, str | None]]

def sd_notify(state: str) -> None:
    """Tell systemd ``state`` (READY=1, STOPPING=1) if it asked to be told."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(state.encode(), address)
    except OSError as e:
        LOG.warning("cannot notify systemd (%s): %s", state, e)


class Watcher:
    """The loop's state: what the forwarder and OVSDB looked like last time."""

    def __init__(self, session: Any, interval: float) -> None:
        from smartnic_vif.host.forwarder.client import ForwarderClient

        self.session = session
        self.interval = interval
        self.stop = threading.Event()
        group = session.group
        self.stats_client = ForwarderClient(
            group.forwarder_port_control_endpoint, group.forwarder_stats_endpoint,
            min(float(group.forwarder_timeout), STATS_TIMEOUT))
        self.relays: RelaySet | None = None
        self.forwarder_answers: bool | None = None
        self.ovsdb_seqno: int | None = None
        self.ovsdb_lost = False

    # -- passes ------------------------------------------------------------
    def reconcile(self, why: str, interrupted: bool = False,
                  port_ids: set[str] | None = None) -> None:
        from smartnic_vif.cli.health import reconcile_once

        started = time.monotonic()
        actions = reconcile_once(self.session, interrupted=interrupted, port_ids=port_ids)
        # Each repair is logged by the plugin as it is made; failures here.
        for a in actions:
            if a.get("failed"):
                LOG.error("port %s (VF %s): %s", a["port_id"], a["vf"] or "-", a["action"])
            elif "repairs" not in a:
                LOG.warning("port %s (VF %s): %s", a["port_id"], a["vf"] or "-", a["action"])
        repaired = sum(1 for a in actions if "repairs" in a)
        LOG.info("%s: %d port(s) repaired, %d other action(s) (%.3f s)", why, repaired,
                 len(actions) - repaired, time.monotonic() - started)

    # -- what is watched ------------------------------------------------------
    def forwarder_ports(self) -> set[str]:
        return self.session.store.port_ids("plugged", "forwarder")

    def check_forwarder(self) -> None:
        ports = self.forwarder_ports()
        if not ports:
            self.relays = None  # nothing to watch; no daemon needed
            return
        try:
            relays = self._relays()
        except HostOperationError as e:
            if self.forwarder_answers is not False:
                LOG.warning("virtio-forwarder does not answer: %s", e)
            self.forwarder_answers = False
            return
        came_back = self.forwarder_answers is False
        changed = self.relays is not None and relays != self.relays
        self.forwarder_answers = True
        self.relays = relays
        if came_back or changed:
            self.reconcile("virtio-forwarder answers again" if came_back
                           else "virtio-forwarder relays changed", port_ids=ports)
            # What the repairs did is not a change to react to again.
            self.relays = self._relays_now(relays)

    def _relays_now(self, default: RelaySet) -> RelaySet:
        try:
            return self._relays()
        except HostOperationError:
            return default

    def _relays(self) -> RelaySet:
        """The daemon's relays in use, each as (slot, VF, socket): a VM that
        is not connected yet shows its socket as "NONE", so the VF counts as
        much as the socket; a restarted daemon has none of them."""
        return frozenset((r.relay_id, r.vf_ident, r.vhost_path)
                         for r in self.stats_client.relays_in_use())

    def check_ovsdb(self) -> None:
        try:
            seqno, ready = self.session.host.ovsdb.session_state()
        except HostOperationError as e:
            if not self.ovsdb_lost:
                LOG.warning("OVSDB unreachable: %s", e)
            self.ovsdb_lost = True
            return
        if not ready:
            return
        again = self.ovsdb_lost or (self.ovsdb_seqno is not None and seqno != self.ovsdb_seqno)
        self.ovsdb_seqno, self.ovsdb_lost = seqno, False
        if again:
            self.reconcile("OVSDB connection made again")

    # -- the loop -------------------------------------------------------------
    def run(self) -> int:
        self.reconcile("start", interrupted=True)
        self.check_ovsdb()
        self.check_forwarder()
        sd_notify("READY=1")
        LOG.info("watching virtio-forwarder and OVSDB every %g s; full pass every %g s",
                 POLL, self.interval)
        next_full = time.monotonic() + self.interval
        while not self.stop.is_set():
            self.check_forwarder()
            self.check_ovsdb()
            if time.monotonic() >= next_full:
                self.reconcile("periodic pass")
                next_full = time.monotonic() + self.interval
            self.stop.wait(POLL)
        sd_notify("STOPPING=1")
        LOG.info("stopped")
        self.stats_client.close()
        return EXIT_OK


def run(session: Any, interval: float) -> int:
    """Run the watch loop until SIGTERM or SIGINT."""
    # What the loop does is its output: log it even without -v.
    logging.getLogger("smartnic_vif").setLevel(logging.INFO)
    watcher = Watcher(session, interval)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        LOG.info("%s received, stopping", signal.Signals(signum).name)
        watcher.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return watcher.run()
