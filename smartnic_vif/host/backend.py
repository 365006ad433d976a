"""The host backend: every operation a plan may name, and the reads that
planning needs (inventory, VF snapshot).

It is the same class on a real host and on the simulated one; only the
configuration differs (sysfs root, ``kernel_backend``, OVSDB and forwarder
endpoints). Privileged work goes through :mod:`smartnic_vif.host.privileged`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from smartnic_vif.decisions.plan import Operation
from smartnic_vif.decisions.plug import LinkState, VfSnapshot
from smartnic_vif.host import discovery, hook, kernel, netdev
from smartnic_vif.host.forwarder.client import ForwarderClient
from smartnic_vif.host.ovsdb import OvsdbClient, PendingWrite, PortSpec
from smartnic_vif.model import types
from smartnic_vif.model.errors import HostOperationError, NotFound, RepresentorNotFound
from smartnic_vif.model.inventory import Inventory, Representor

LOG = logging.getLogger(__name__)


def pci_lock_offset(address: str) -> int:
    """A PCI address (``dddd:bb:dd.f``, normalised) as one number, unique per
    address: domain, bus, device (5 bits) and function (3 bits)."""
    domain, bus, rest = address.split(":")
    device, function = rest.split(".")
    return (int(domain, 16) << 16) | (int(bus, 16) << 8) | (int(device, 16) << 3) | int(function)


def _changes_nothing(op: Operation) -> bool:
    """A ``configure_link`` that names no change (no new name, nothing to set)."""
    if op.name != "configure_link":
        return False
    args = op.args
    return (args.get("new_name") in (None, args.get("ifname"))
            and all(args.get(k) is None for k in ("mtu", "up", "promisc")))


class Host:
    """Operations on one host, configured by an ``[os_vif_smartnic]`` group."""

    OPERATIONS = frozenset(
        {
            "set_vf",
            "bind_driver",
            "configure_link",
            "confirm_link_up",
            "ensure_bridge",
            "ovs_set_port",
            "ovs_delete_port",
            "forwarder_add",
            "forwarder_remove",
            "run_hook",
        }
    )
    # Operations that are privileged changes: several of them, ready at the
    # same time (or one right after the other), go in one round trip to the
    # privileged helper (:meth:`call_group`).
    GROUPABLE = frozenset({"set_vf", "bind_driver", "configure_link"})
    # Operations begun by begin() (the executor waits for them without a thread).
    STARTABLE = frozenset({"ovs_set_port"})

    def __init__(self, config: Any,
                 inventory: Inventory | discovery.BackgroundDiscovery | None = None,
                 ovsdb_tables: Mapping[str, Sequence[str]] | None = None) -> None:
        """``inventory``: discovery of this host's ``sysfs_root`` if the
        caller has just read it, or has it running in the background (read
        on first use otherwise).
        ``ovsdb_tables``: for a host only read (status, doctor), the OVSDB
        tables and columns to replicate (:data:`~smartnic_vif.host.ovsdb.READ_TABLES`)."""
        self.config = config
        self.ovsdb_tables = ovsdb_tables
        self.sysfs_root = os.path.abspath(config.sysfs_root)
        self.kernel_backend = config.kernel_backend
        self._inventory = inventory
        self._lock = threading.Lock()
        self._ovsdb: OvsdbClient | None = None
        self._forwarder: ForwarderClient | None = None
        self._bridges: set[str] = set()
        self._relay_slots: int | None = None
        self._helper_checked = False
        self._names_before: dict[str, str] = {}
        self._kernel_backend: kernel.Kernel | None = None

    # -- clients, made on first use ----------------------------------------
    @property
    def ovsdb(self) -> OvsdbClient:
        with self._lock:
            if self._ovsdb is None:
                self._ovsdb = OvsdbClient(self.config.ovsdb_connection, self.config.ovsdb_timeout,
                                          tables=self.ovsdb_tables)
            return self._ovsdb

    @property
    def forwarder(self) -> ForwarderClient:
        with self._lock:
            if self._forwarder is None:
                self._forwarder = ForwarderClient(
                    self.config.forwarder_port_control_endpoint,
                    self.config.forwarder_stats_endpoint,
                    self.config.forwarder_timeout,
                )
            return self._forwarder

    def relay_slots(self, refresh: bool = False) -> int:
        """How many relays virtio-forwarder can hold (its MAX_RELAYS, fixed
        by its DPDK build): read from its stats once, then kept; ``refresh``
        reads it again (a daemon rebuilt and restarted may have another)."""
        if self._relay_slots is None or refresh:
            self._relay_slots = self.forwarder.relay_usage().total
        return self._relay_slots

    def close(self) -> None:
        if isinstance(self._inventory, discovery.BackgroundDiscovery):
            self._inventory.close()
            self._inventory = None
        if self._forwarder is not None:
            self._forwarder.close()
            self._forwarder = None

    # -- reads ------------------------------------------------------------
    def inventory(self, refresh: bool = False) -> Inventory:
        """Discovery is cached: devices do not come and go between plugs, and
        reading a few hundred sysfs files per plug would dominate its cost."""
        with self._lock:
            if isinstance(self._inventory, discovery.BackgroundDiscovery):
                pending, self._inventory = self._inventory, None
                if not refresh:
                    self._inventory = pending.result()
                pending.close()
            if self._inventory is None or refresh:
                self._inventory = discovery.discover(self.sysfs_root)
            return self._inventory

    def _kernel(self) -> kernel.Kernel:
        """The kernel backend for reads (it keeps no state of its own: made
        once, not per read; status reads every plugged VF)."""
        if self._kernel_backend is None:
            self._kernel_backend = kernel.kernel_for(self.kernel_backend, self.sysfs_root)
        return self._kernel_backend

    def snapshot(self, vf_address: str, representor: str) -> VfSnapshot:
        """The VF's current settings, driver and representor link.

        Read in this process: reading VF settings and links needs no
        privilege, and a privsep round trip here would delay every plug."""
        inv = self.inventory()
        vf = inv.vf(vf_address)
        settings = self._kernel().get_vf(vf.pf_address, vf.index)
        link = netdev.get_link(types.ifname(representor, "representor"))
        if link is None:
            raise NotFound(
                f"representor {representor} of VF {vf.index} of PF {vf.pf_address} "
                "does not exist (renamed or removed since discovery?)"
            )
        return VfSnapshot(
            settings=dict(settings),
            driver=kernel.current_driver(self.sysfs_root, vf.address),
            representor=LinkState(name=representor, mtu=int(link["mtu"]), up=bool(link["up"]),
                                  promisc=bool(link["promisc"])),
        )

    def _renamed(self, old: str, new: str) -> None:
        """A link this process renamed: discovery read now would say so
        (sysfs follows renames), and so does the kept one; the name it had
        before this process's renames is remembered."""
        with self._lock:
            if isinstance(self._inventory, Inventory):
                self._inventory = discovery.rename_representor(self._inventory, old, new)
            first = self._names_before.pop(old, old)
            if first != new:
                self._names_before[new] = first

    def name_before_renames(self, name: str) -> str:
        """The name link ``name`` had before this process renamed it (itself
        if it did not): what unplug gives back when the journal is lost."""
        with self._lock:
            return self._names_before.get(name, name)

    def representor(self, vf_address: str) -> Representor:
        """The VF's representor as discovery knows it. Discovery is kept,
        and another process may have renamed the representor since (a port
        plugged or unplugged elsewhere, or before this process started, when
        discovery found it under the port's name): one whose name no longer
        exists, or that the kept discovery did not find (read while another
        process renamed it), is looked for again by a new discovery."""
        try:
            rep = self.inventory().representor_of(vf_address)
            if netdev.exists(rep.name):
                return rep
        except RepresentorNotFound:
            pass
        return self.inventory(refresh=True).representor_of(vf_address)

    def vf_settings(self, vf_address: str) -> dict[str, Any]:
        vf = self.inventory().vf(vf_address)
        return self._kernel().get_vf(vf.pf_address, vf.index)

    def vf_driver(self, vf_address: str) -> str | None:
        return kernel.current_driver(self.sysfs_root, types.pci_address(vf_address))

    @contextlib.contextmanager
    def vf_lock(self, vf_address: str) -> Iterator[None]:
        """Serialise work on one VF across threads and processes.

        An open-file-description lock on one byte of ``<state_path>/vfs.lock``,
        the byte at the VF's PCI address read as a number: each open() owns
        its locks, so two threads exclude each other as two processes do, and
        closing the file releases them (also when a process dies). One file
        for every VF: a file per VF cost a file creation on each VF's first
        plug."""
        offset = pci_lock_offset(types.pci_address(vf_address))
        path = os.path.join(self.config.state_path, "vfs.lock")
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o600)
        except FileNotFoundError:  # the state directory, on first use only
            os.makedirs(self.config.state_path, mode=0o700, exist_ok=True)
            fd = os.open(path, flags, 0o600)
        try:
            # struct flock: l_type, l_whence, l_start, l_len, l_pid (0 for
            # OFD locks), with the padding x86_64 and arm64 both use.
            fcntl.fcntl(fd, fcntl.F_OFD_SETLKW,
                        struct.pack("@hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, offset, 1, 0))
            yield
        finally:
            os.close(fd)

    # -- operations named by plans -----------------------------------------
    def set_vf(self, pf_address: str, vf_index: int, settings: dict[str, Any]) -> None:
        self._change_one("set_vf", pf_address=pf_address, vf_index=vf_index, settings=settings)

    def bind_driver(self, address: str, driver: str | None) -> None:
        self._change_one("bind_driver", address=address, driver=driver)

    def configure_link(
        self, ifname: str, new_name: str | None = None, mtu: int | None = None,
        up: bool | None = None, promisc: bool | None = None,
    ) -> None:
        """Rename ``ifname`` to ``new_name`` and set MTU, state and
        promiscuous mode (None: leave it), in one privileged call, or none
        if that changes nothing. Finding only ``new_name`` means the rename
        was done already (a repeated plug, or an undo finishing a partial one)."""
        self._change_one("configure_link", ifname=ifname, new_name=new_name, mtu=mtu, up=up,
                         promisc=promisc)

    def confirm_link_up(self, ifname: str) -> None:
        """Bring ``ifname`` up again if it went down (read here; the privileged
        call only when it is down)."""
        link = netdev.get_link(types.ifname(ifname))
        if link is None:
            raise NotFound(f"network device {ifname} does not exist")
        if not link["up"]:
            LOG.info("%s went down while OVS added it; bringing it up again", ifname)
            self._change_one("configure_link", ifname=ifname, up=True)

    def set_mtu(self, ifname: str, mtu: int) -> bool:
        """Set the MTU of ``ifname`` if it exists (False: it does not; a
        normal port's tap may be made by libvirt only later)."""
        try:
            self._change_one("set_mtu", ifname=ifname, mtu=mtu)
        except NotFound:
            return False
        return True

    def call_group(
        self, ops: Sequence[Operation], keep_going: bool = False
    ) -> list[Exception | None]:
        """Run privileged operations (:attr:`GROUPABLE`, and ``set_mtu``,
        which no plan names) in order, in one round trip. One outcome (None:
        done) per operation that ran; after a failure the rest do not run,
        unless ``keep_going``."""
        # An operation that changes nothing costs no round trip.
        # The privileged helper's module (oslo.privsep) only where a change
        # is made: reads load none of it.
        from smartnic_vif.host import privileged

        work = [op for op in ops if not _changes_nothing(op)]
        if any(op.name in ("set_vf", "bind_driver") for op in work):
            self._check_helper()
        outcomes = iter(privileged.apply([self._privileged_change(op) for op in work], keep_going)
                        if work else [])
        results: list[Exception | None] = []
        for op in ops:
            if _changes_nothing(op):
                results.append(None)
                continue
            outcome = next(outcomes, None)
            if outcome is None:  # not run: an earlier change failed
                break
            if outcome[0] == "ok":
                if op.name == "configure_link" and outcome[1]:
                    self._renamed(*outcome[1])
                elif op.name == "bind_driver":
                    with self._lock:
                        # The VF's driver and netdev changed; nothing else did.
                        if isinstance(self._inventory, Inventory):
                            self._inventory = discovery.refresh_vf(
                                self._inventory, op.args["address"])
                results.append(None)
            else:
                results.append(privileged.error_from_data(outcome[1], outcome[2]))
                if not keep_going:
                    break
        return results

    def _check_helper(self) -> None:
        """Once: the privileged helper changes VFs in the tree its own
        configuration names; refuse to go on if that is not the one this
        process reads (a different config file, or the option set in
        another group)."""
        if self._helper_checked:
            return
        from smartnic_vif.host import privileged

        backend, root = privileged.helper_configuration()
        mine = (self.kernel_backend, os.path.realpath(self.sysfs_root))
        if (backend, root) != mine:
            raise HostOperationError(
                f"the privileged helper changes VFs with kernel_backend {backend} under "
                f"sysfs_root {root} (its own configuration), but this process reads "
                f"kernel_backend {mine[0]} under {mine[1]}: set sysfs_root and kernel_backend "
                "the same in the configuration both read ([os_vif_smartnic] or "
                "[os_vif_agilio_ovs])"
            )
        self._helper_checked = True

    def _change_one(self, name: str, **args: Any) -> None:
        [error] = self.call_group([Operation(name, args)])
        if error is not None:
            raise error

    def _privileged_change(self, op: Operation) -> list[Any]:
        """The privileged helper's change for an operation."""
        if op.name in ("set_vf", "bind_driver"):
            # The helper acts on the tree of its own configuration (checked
            # against ours once, :meth:`_check_helper`).
            return [op.name, dict(op.args)]
        if op.name == "configure_link":
            # Finding only the new name means the rename was done already.
            return ["set_link", {**op.args, "or_name": op.args.get("new_name")}]
        if op.name == "set_mtu":
            return ["set_link", dict(op.args)]
        raise ValueError(f"{op.name} is not a privileged operation")

    def ensure_bridge(self, bridge: str, datapath_type: str) -> None:
        # Plans made before ovs_set_port made its bridge still name this.
        if bridge in self._bridges:
            return
        self.ovsdb.ensure_bridge(bridge, datapath_type)
        self._bridges.add(bridge)

    def ovs_set_port(
        self, bridge: str, port: str, iface_id: str, mac: str, vm_uuid: str, mtu: int | None,
        datapath_type: str | None = None,
    ) -> None:
        """Add or update the port; with ``datapath_type``, make a missing
        bridge in the same transaction."""
        self.begin_ovs_set_port(bridge, port, iface_id, mac, vm_uuid, mtu, datapath_type).wait()

    def begin_ovs_set_port(
        self, bridge: str, port: str, iface_id: str, mac: str, vm_uuid: str, mtu: int | None,
        datapath_type: str | None = None,
    ) -> PendingWrite:
        """:meth:`ovs_set_port`, returning once the transaction is on its way
        (see :meth:`begin`). Bridges are not deleted under a running host, so
        once one is seen it is not checked again; a failed port change
        forgets it, and the next plug checks again."""
        known = bridge in self._bridges
        try:
            spec = PortSpec(bridge=bridge, name=port, iface_id=iface_id, mac=mac,
                            vm_uuid=vm_uuid, mtu=mtu)
            create = {bridge: datapath_type} if datapath_type is not None and not known else None
            pending = self.ovsdb.begin_apply_ports([spec], create_bridges=create)
        except Exception:
            self._bridges.discard(bridge)
            raise

        def finish() -> None:
            try:
                pending.wait()
            except Exception:
                self._bridges.discard(bridge)
                raise
            if datapath_type is not None:
                self._bridges.add(bridge)

        return PendingWrite(pending.done, finish, pending.specs, pending.what, pending.deadline)

    def begin(self, op: Operation) -> PendingWrite:
        """Start one of :attr:`STARTABLE` and return without waiting for it.

        Its work runs on the OVSDB connection's thread (which then waits for
        ovs-vswitchd as well); the executor begins a lane made of this step
        before the phase's other lanes and waits for it after them, so no
        thread of its own sits idle waiting for OVSDB."""
        if op.name not in self.STARTABLE:
            raise ValueError(f"{op.name} cannot be begun")
        begin_op: Callable[..., PendingWrite] = getattr(self, "begin_" + op.name)
        return begin_op(**op.args)

    def ovs_delete_port(self, port: str) -> None:
        self.ovsdb.delete_port(port)

    def forwarder_add(self, vf_address: str, vhost_path: str) -> None:
        # No answer does not mean not done: the daemon may have made the
        # relay and lost the reply. The executor undoes a failed step too,
        # which withdraws exactly this pair (both keys: never another
        # port's relay).
        self.forwarder.add_sock(vf_address, vhost_path)

    def forwarder_remove(self, vf_address: str, vhost_path: str | None) -> None:
        self.forwarder.remove_sock(vf_address, vhost_path)

    def run_hook(self, phase: str, mode: str, vf_address: str, representor: str, mac: str,
                 vhost_path: str) -> None:
        executable = self.config.vendor_hook
        if not executable:
            raise HostOperationError("a plan runs the vendor hook but none is configured")
        hook.run_hook(executable, self.config.vendor_hook_timeout, phase, mode, vf_address,
                      representor, mac, vhost_path)
