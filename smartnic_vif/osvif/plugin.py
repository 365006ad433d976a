"""The os-vif plugin for SmartNIC hosts.

Registered twice in the ``os_vif`` entry-point namespace: as ``smartnic`` (our
own VIFs with :class:`VIFPortProfilePassthrough` / :class:`VIFPortProfileForwarder`)
and as ``agilio_ovs``, the plugin name upstream Nova sets for vif_type
``agilio_ovs`` ports (VIFPortProfileOVSRepresentor with a
DatapathOffloadRepresentor), so those reach it unchanged.

plug/unplug per mode:

- normal (VIFOpenVSwitch, VIFBridge): os-vif's stock ``ovs`` plugin does the
  work (:mod:`smartnic_vif.osvif.stock`), on our OVSDB connection, never
  changing an existing bridge, with the VIF's datapath_type pinned to the
  bridge's;
- passthrough (VIFHostDevice) and forwarder (VIFVHostUser): a plan from
  :mod:`smartnic_vif.decisions.plug`, run by :mod:`smartnic_vif.host.executor`
  under a per-VF lock, journalled in the state store so that unplug restores
  exactly what plug changed, also from another process.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import fields, replace
from typing import Any

from os_vif import exception as osv_exception
from os_vif import objects, plugin

from smartnic_vif import conf
from smartnic_vif.decisions import plug as decide
from smartnic_vif.decisions import relays
from smartnic_vif.decisions.plan import Plan
from smartnic_vif.decisions.repair import plan_repair
from smartnic_vif.host import executor, traces, undo
from smartnic_vif.host.backend import Host
from smartnic_vif.host.forwarder.client import check_vhost_socket
from smartnic_vif.host.observe import observe_port
from smartnic_vif.host.state import PortRecord, StateStore, VfAlreadyClaimed
from smartnic_vif.model.errors import HostOperationError, PlanStepFailed, SmartNICError
from smartnic_vif.osvif import stock
from smartnic_vif.osvif.objects import VIFPortProfileForwarder, VIFPortProfilePassthrough

LOG = logging.getLogger(__name__)


def _profile(name: str, max_version: str = "1.0") -> Any:
    return objects.host_info.HostPortProfileInfo(
        profile_object_name=name, min_version="1.0", max_version=max_version
    )


class SmartNICPlugin(plugin.PluginBase):
    """Plugs normal, passthrough and virtio-forwarder ports on SmartNIC hosts."""

    NAME = "smartnic"
    CONFIG_OPTS = conf.OPTS

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._host: Host | None = None
        self._store: StateStore | None = None
        self._ovs_plugin: Any = None

    # -- wiring -------------------------------------------------------------
    @property
    def host(self) -> Host:
        if self._host is None:
            self._host = Host(self.config)
        return self._host

    @property
    def store(self) -> StateStore:
        if self._store is None:
            self._store = StateStore(self.config.state_path)
        return self._store

    @property
    def options(self) -> decide.PlugOptions:
        return decide.PlugOptions(
            default_mtu=self.config.network_device_mtu,
            default_datapath_type=self.config.default_datapath_type,
            vfio_driver=self.config.vfio_driver,
            hook=bool(self.config.vendor_hook),
            default_bridge=self.config.integration_bridge,
            vhost_socket_dirs=conf.vhost_socket_dirs(self.config),
        )

    def describe(self) -> objects.host_info.HostPluginInfo:
        ovs = _profile(objects.vif.VIFPortProfileOpenVSwitch.__name__, "1.4")
        representor = _profile(objects.vif.VIFPortProfileOVSRepresentor.__name__, "1.4")
        # Upstream Nova puts a DatapathOffloadRepresentor in the profile's
        # datapath_offload; HostPortProfileInfo has no field for offloads, so
        # it is listed beside the profiles that may carry it.
        offload = _profile(objects.vif.DatapathOffloadRepresentor.__name__)
        passthrough = _profile(VIFPortProfilePassthrough.__name__)
        forwarder = _profile(VIFPortProfileForwarder.__name__)

        def vif_info(cls: Any, version: str, profiles: list[Any]) -> Any:
            return objects.host_info.HostVIFInfo(
                vif_object_name=cls.__name__, min_version="1.0", max_version=version,
                supported_port_profiles=profiles,
            )

        return objects.host_info.HostPluginInfo(
            plugin_name=self.NAME,
            vif_info=[
                vif_info(objects.vif.VIFOpenVSwitch, "1.0", [ovs]),
                vif_info(objects.vif.VIFBridge, "1.0", [ovs]),
                vif_info(objects.vif.VIFHostDevice, "1.0", [passthrough, representor, offload]),
                vif_info(objects.vif.VIFVHostUser, "1.1", [forwarder, representor, offload]),
            ],
        )

    # -- entry points ---------------------------------------------------------
    def plug(self, vif: Any, instance_info: Any) -> None:
        try:
            port = decide.port_from_vif(vif, str(instance_info.uuid), self.options)
            if port.mode == decide.NORMAL:
                self._plug_normal(vif, instance_info, port)
            else:
                self.plug_port(port)
        except (SmartNICError, ValueError) as e:
            raise osv_exception.PlugException(vif=vif, err=str(e)) from e

    def unplug(self, vif: Any, instance_info: Any) -> None:
        try:
            # The socket directory check guards plugs only: a port plugged
            # before the directories changed must still come off.
            port = decide.port_from_vif(vif, str(instance_info.uuid),
                                        replace(self.options, vhost_socket_dirs=()))
            if port.mode == decide.NORMAL:
                self._unplug_normal(vif, instance_info, port)
            else:
                self.unplug_port(port)
        except (SmartNICError, ValueError) as e:
            raise osv_exception.UnplugException(vif=vif, err=str(e)) from e

    # -- passthrough and forwarder ---------------------------------------------
    def plan_port(self, port: decide.PortRequest) -> Plan:
        """The plug plan for ``port`` as things stand (for --dry-run)."""
        assert port.vf_address is not None
        if port.mode == decide.FORWARDER:
            self._check_relay_room(port)
        rep = self.host.representor(port.vf_address)  # may discover again
        return decide.plan_plug(
            port, self.host.inventory(), self.host.snapshot(port.vf_address, rep.name),
            self.options
        )

    def _check_relay_room(self, port: decide.PortRequest) -> None:
        """Refuse a forwarder port the daemon has no relay slot for, before
        anything changes.

        The slots in use are those the journal's forwarder claims own: a
        plugged port keeps its slot while a restarted daemon has forgotten
        its relay (reconcile puts it back), and counting them costs no
        round trip. The number of slots is the daemon's, read once and read
        again before refusing (this process may outlive the daemon it read it
        from). A relay someone else made is not counted: ADD_SOCK then refuses
        (ERROR 2) and the plug is undone. A daemon that does not answer its
        stats is left to answer ADD_SOCK."""
        assert port.vf_address is not None
        owners = self.store.forwarder_vfs()
        try:
            try:
                relays.check_relay_room(port.port_id, port.vf_address,
                                        self.host.relay_slots(), owners)
            except relays.RelayLimitReached:
                relays.check_relay_room(port.port_id, port.vf_address,
                                        self.host.relay_slots(refresh=True), owners)
        except HostOperationError as e:
            LOG.warning("port %s: relay limit not checked: %s", port.port_id, e)

    def plug_port(self, port: decide.PortRequest) -> None:
        assert port.vf_address is not None
        if port.vhost_path is not None:
            check_vhost_socket(port.vhost_path, self.options.vhost_socket_dirs, "vif.path")
        with self.host.vf_lock(port.vf_address):
            record = self.store.get(port.port_id)
            if record is not None and record.plan is not None:
                if record.vf_address != port.vf_address:
                    raise SmartNICError(
                        f"port {port.port_id} is plugged on VF {record.vf_address}, "
                        f"not {port.vf_address}; unplug it first"
                    )
                if record.phase == "plugged":
                    # Plugged already (Nova's init_host plugs every VIF
                    # again): re-assert what drifted; hooks do not run twice.
                    self._reapply(record.plan, port.port_id)
                    return
                # A crashed plug or unplug left this: undo what it did first.
                self._undo(record.plan, record.steps_started, port.port_id)
            owner = self.store.by_vf(port.vf_address)
            if owner is not None and owner.port_id != port.port_id:
                # Say so before planning: the owner may have renamed the
                # representor, which would make planning fail less clearly.
                raise VfAlreadyClaimed(port.vf_address, owner.port_id)
            # Planning only reads the host; the claim, the plan and its first
            # phase (as started) are then journalled together, before anything
            # changes.
            plan = self.plan_port(port)
            first = plan.journal_mark(0)
            self.store.claim(port.port_id, port.vf_address, port.mode, _request_dict(port),
                             plan=plan, steps_started=first)
            _failpoint(0)
            try:
                executor.execute(plan, self.host,
                                 on_progress=lambda n: self.store.set_progress(port.port_id, n),
                                 on_done=_failpoint, started=first)
            except PlanStepFailed as e:
                if e.undo_warnings:
                    self.store.note_unrestored(port.port_id, port.vf_address, e.undo_warnings)
                if e.undo_errors:
                    # Leave the journal so that reconcile (or the next unplug)
                    # can finish the undo.
                    self.store.set_phase(port.port_id, "unplugging")
                else:
                    self.store.release(port.port_id)
                raise
            self.store.set_phase(port.port_id, "plugged", len(plan))
            # The plug's snapshot is the VF's new baseline: notes of what an
            # earlier unplug could not restore are obsolete.
            self.store.clear_unrestored(port.vf_address)

    def unplug_port(self, port: decide.PortRequest) -> None:
        assert port.vf_address is not None
        # Lock the VF the journal names when there is one: undoing its plan
        # changes that VF, whichever VF the caller's VIF names (Nova's rollback
        # at a migration's destination passes the source's VIF).
        def vf_to_lock(record: PortRecord | None) -> str:
            if record is not None and record.plan is not None and record.vf_address:
                return record.vf_address
            assert port.vf_address is not None
            return port.vf_address

        vf_address = vf_to_lock(self.store.get(port.port_id))
        with self.host.vf_lock(vf_address):
            record = self.store.get(port.port_id)  # what it is now, under the lock
            if vf_to_lock(record) != vf_address:
                # Plugged, moved or unplugged while we waited: start again.
                return self.unplug_port(port)
            if record is None or record.plan is None:
                if record is not None:
                    self.store.release(port.port_id)
                owner = self.store.by_vf(port.vf_address)
                if owner is not None:
                    # Another port holds the VF now (Nova cleaning up a VIF
                    # that failed to plug, or one from before a move): its
                    # MAC, driver, relay and OVS port are not ours to reset.
                    LOG.info("unplug of port %s: VF %s belongs to port %s; nothing to undo",
                             port.port_id, port.vf_address, owner.port_id)
                    return
                # No journal (state lost, or never plugged here): remove what
                # the port left on the host; everything absent counts as done.
                self.unplug_unrecorded(
                    port.port_id, vf_address=port.vf_address,
                    representor_name=port.representor_name, vhost_path=port.vhost_path,
                    mac=port.mac, mode=port.mode, relay_driver=port.relay_driver)
                return
            self._undo(record.plan, record.steps_started, port.port_id)
            hook = decide.post_unplug_hook(record.plan) if self.options.hook else None
            if hook is not None:
                undo.call(self.host, hook)

    def unplug_unrecorded(
        self, port_id: str, *, vf_address: str | None = None,
        representor_name: str | None = None, vhost_path: str | None = None,
        mac: str | None = None, mode: str | None = None, relay_driver: str | None = None,
    ) -> decide.PortTraces:
        """Unplug a port that has no journal: find what it left on the host
        (:mod:`smartnic_vif.host.traces`; the hints come from its VIF, when
        there is one) and remove it, restoring only what can be known
        (:func:`decide.plan_unplug_unrecorded`). Returns the traces found.
        The caller holds the VF's lock when it names the VF."""
        found = traces.port_traces(self.host, port_id, vf_address=vf_address,
                                   representor_name=representor_name,
                                   vhost_path=vhost_path, mac=mac)
        plan = decide.plan_unplug_unrecorded(found, self.host.inventory(), self.options,
                                             mode, relay_driver)
        if plan.steps:
            LOG.info("unplug of port %s without a journal:\n%s", port_id, plan.describe())
        errors = undo.run_best_effort(plan, self.host)
        if errors:
            raise SmartNICError(f"unplug of port {port_id} incomplete: " + "; ".join(errors))
        rep = found.representor
        if rep and rep == found.representor_home and rep in found.port_names:
            # Discovery knows it by the port's name (sysfs follows renames):
            # the name it had before plug was only in the lost journal.
            self.store.note_unrestored(port_id, found.vf_address, [
                f"representor {rep} of VF {found.vf_address} keeps the port's name: "
                "its name before plug is unknown without the journal"])
        return found

    def recover(self, port_id: str) -> str:
        """After a crash: undo a half-done plug or finish a half-done unplug
        of ``port_id``; a plugged port is left alone. Says what it did."""
        record = self.store.get(port_id)
        if record is None:
            return "no record"
        if record.vf_address is None:
            return f"{record.phase} (normal port, nothing to recover)"
        with self.host.vf_lock(record.vf_address):
            record = self.store.get(port_id)  # what it is now, under the lock
            if record is None:
                return "no record"
            if record.phase == "plugged":
                return "plugged"
            if record.plan is None:
                self.store.release(port_id)
                return "released a claim whose plug never touched the host"
            # Progress is written before steps start, so the steps recorded
            # as started are all that may have run (some perhaps not: every
            # undo is safe on a step that did not run).
            upto = min(record.steps_started, len(record.plan.steps))
            self._undo(record.plan, upto, port_id)
            # "plugging" -> "plug", "unplugging" -> "unplug"
            return f"undid {upto} step(s) of an interrupted {record.phase.removesuffix('ging')}"

    def _undo(self, plan: Plan, steps_started: int, port_id: str) -> None:
        self.store.set_phase(port_id, "unplugging")
        undone = undo.undo(plan.steps[:steps_started], self.host)
        if undone.errors:
            raise SmartNICError(f"unplug of port {port_id} incomplete: "
                                + "; ".join(undone.errors))
        # An undo that found its object gone (a representor deleted while
        # plugged) is done: the claim goes, and status shows the note.
        if undone.warnings:
            self.store.note_unrestored(port_id, plan.vf_address, undone.warnings)
        self.store.release(port_id)

    def repair(self, port_id: str) -> list[str]:
        """Re-assert on the host what the plugged port ``port_id``'s plan set
        and what no longer holds (a relay a daemon restart forgot, a VF or
        representor a reboot reset, an OVS port edited away), under the VF's
        lock; hooks do not run again. Returns each repair as "what was wrong
        -> what was done" (empty: nothing had drifted, or the port is not a
        plugged passthrough or forwarder port). Raises SmartNICError when the
        host cannot be read or a repair fails, naming what was repaired."""
        record = self.store.get(port_id)
        if record is None or record.vf_address is None or record.phase != "plugged":
            return []
        with self.host.vf_lock(record.vf_address):
            record = self.store.get(port_id)  # what it is now, under the lock
            if record is None or record.phase != "plugged" or record.plan is None:
                return []
            return self._reapply(record.plan, port_id)

    def _reapply(self, plan: Plan, port_id: str) -> list[str]:
        """Run again the plan's ``do`` steps the host no longer reflects
        (:func:`smartnic_vif.decisions.repair.plan_repair`), in plan order.
        The caller holds the VF's lock."""
        observed = observe_port(self.host, plan)
        repairs = plan_repair(plan, observed)
        done: list[str] = []
        for repair in repairs:
            try:
                undo.call(self.host, repair.do)
            except (SmartNICError, OSError) as e:
                so_far = f" (repaired: {'; '.join(done)})" if done else ""
                raise SmartNICError(
                    f"repair of port {port_id} failed: {repair.describe()}: {e}{so_far}"
                ) from e
            if repair.problem is not None:
                LOG.warning("port %s repaired: %s", port_id, repair.describe())
                done.append(repair.describe())
        if observed.errors:
            so_far = f" (repaired: {'; '.join(done)})" if done else ""
            raise SmartNICError(f"port {port_id} could not be checked fully: "
                                + "; ".join(observed.errors) + so_far)
        return done

    # -- normal ports: os-vif's own ovs plugin -----------------------------------
    @property
    def ovs_plugin(self) -> Any:
        """os-vif's stock ``ovs`` plugin, with our OVSDB helper (see
        :mod:`smartnic_vif.osvif.stock`)."""
        if self._ovs_plugin is None:
            self._ovs_plugin = stock.load(self.host, self.config.ovsdb_connection)
        return self._ovs_plugin

    def _pinned(self, vif: Any, port: decide.PortRequest) -> Any:
        """``vif`` with the existing bridge's datapath_type (a copy, when that
        differs from what it says): the stock plugin decides QoS by it, and,
        on a connection of its own, writes it onto the bridge."""
        profile = vif.port_profile if vif.obj_attr_is_set("port_profile") else None
        # "in fields", not hasattr(): reading an unset field of a versioned
        # object raises NotImplementedError, and Nova leaves datapath_type
        # unset when Neutron sends none.
        if profile is None or "datapath_type" not in profile.fields:
            return vif
        wanted = stock.pinned_datapath_type(
            self.host.ovsdb.bridge_datapath_type(port.bridge), self.config.default_datapath_type
        )
        if profile.obj_attr_is_set("datapath_type") and profile.datapath_type == wanted:
            return vif  # already what the bridge has: no copy needed
        pinned = vif.obj_clone()
        pinned.port_profile.datapath_type = wanted
        return pinned

    def _plug_normal(self, vif: Any, instance_info: Any, port: decide.PortRequest) -> None:
        self.ovs_plugin.plug(self._pinned(vif, port), instance_info)

    def _unplug_normal(self, vif: Any, instance_info: Any, port: decide.PortRequest) -> None:
        self.ovs_plugin.unplug(self._pinned(vif, port), instance_info)


def _failpoint(steps_done: int) -> None:
    """Crash-consistency tests kill the process once N steps are done (never
    set in production): SMARTNIC_VIF_TEST_KILL_AFTER_STEP=N."""
    kill_after = os.environ.get("SMARTNIC_VIF_TEST_KILL_AFTER_STEP")
    if kill_after is not None and kill_after == str(steps_done):
        os.kill(os.getpid(), signal.SIGKILL)


class AgilioOvsPlugin(SmartNICPlugin):
    """The same plugin under the name upstream Nova uses for vif_type agilio_ovs."""

    NAME = "agilio_ovs"


def _request_dict(port: decide.PortRequest) -> dict[str, Any]:
    # Every field is a plain value: no deep copy (dataclasses.asdict) needed.
    return {f.name: getattr(port, f.name) for f in fields(port)}
