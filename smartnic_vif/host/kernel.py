"""Kernel-only VF operations: VF settings on the PF and VF driver binding.

Two implementations with one interface:

- :class:`LinuxKernel` does the real thing: netlink ``IFLA_VF_*`` on the PF's
  netdev (through pyroute2) and the sysfs ``driver_override`` dance;
- :class:`SimulatedKernel` serves the simulated SmartNIC host, whose machine
  has no SR-IOV: it keeps VF settings in a small JSON file per VF under the
  simulated sysfs root and rebinds drivers by rewriting the tree's ``driver``
  links, so that discovery and :meth:`get_vf` read back exactly what was set.
  It also gives the VF's veth end (in its namespace) the VF MAC, as a real NIC
  would, so packets in the simulator carry the port's MAC.

Reading needs no privilege (``ip link show`` lists a PF's VFs for any user), so
:meth:`get_vf` runs in the caller; every change (:meth:`set_vf`,
:meth:`bind_driver`) is called only from :mod:`smartnic_vif.host.privileged`
after validation.

The changes trust nothing they read from the tree either: every name read
there and joined into a path (a VF's address from a ``virtfnN`` link, a
driver's name, the simulated VF's netdev and namespace) is validated first,
and every path written, moved or unlinked must resolve inside the root
(:func:`confined`), so a symlink that leads out of the tree is refused. All
of it is checked before the first change.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

from smartnic_vif.host import netdev, rtnl
from smartnic_vif.model import types
from smartnic_vif.model.errors import HostOperationError, InvalidValue, NotFound

# IFLA_VF_LINK_STATE values.
_LINK_STATES = {0: "auto", 1: "enable", 2: "disable"}
_LINK_STATE_VALUES = {v: k for k, v in _LINK_STATES.items()}
VF_SETTING_KEYS = ("mac", "vlan", "qos", "trust", "spoofchk", "link_state")
SIM_STATE_DIR = "smartnic-sim"
T = TypeVar("T")
# A network namespace's name: a file name under /var/run/netns.
_NETNS_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class Kernel(Protocol):
    def get_vf(self, pf_address: str, vf_index: int) -> dict[str, Any]: ...

    def netdev_renamed(self, old: str, new: str) -> None: ...

    def set_vf(self, pf_address: str, vf_index: int, settings: dict[str, Any]) -> None: ...

    def bind_driver(self, address: str, driver: str | None) -> str | None: ...


def _pci_dir(root: str, address: str) -> str:
    path = os.path.join(root, "sys", "bus", "pci", "devices", address)
    if not os.path.isdir(path):
        raise NotFound(f"PCI address {address} is not present under {root}")
    return path


def confined(root: str, path: str) -> str:
    """``path``, if it and its directory resolve inside ``root`` (symlinks
    followed); a path that leads out of the tree is refused."""
    top = os.path.realpath(root)
    inside = top.rstrip("/") + "/"
    for p in (os.path.dirname(path), path) if os.path.lexists(path) else (
            os.path.dirname(path),):
        real = os.path.realpath(p)
        if real != top and not real.startswith(inside):
            raise HostOperationError(
                f"refusing to change {path}: it leads to {real}, outside {root}"
            )
    return path


def netns_name(value: object, field: str) -> str:
    if not isinstance(value, str) or value in (".", "..") or not _NETNS_RE.fullmatch(value):
        raise InvalidValue(field, value, "expected a network namespace name (a file name "
                           "under /var/run/netns: letters, digits and _-.)")
    return value


def vf_address(root: str, pf_address: str, vf_index: int) -> str:
    link = os.path.join(_pci_dir(root, pf_address), f"virtfn{vf_index}")
    try:
        target = os.readlink(link)
    except OSError:
        raise NotFound(f"PF {pf_address} has no VF {vf_index} ({link} missing)") from None
    return types.pci_address(os.path.basename(target), f"target of {link}")


def current_driver(root: str, address: str) -> str | None:
    try:
        return os.path.basename(os.readlink(os.path.join(_pci_dir(root, address), "driver")))
    except OSError:
        return None


def _pf_netdev(root: str, pf_address: str) -> str:
    net = os.path.join(_pci_dir(root, pf_address), "net")
    try:
        names = sorted(os.listdir(net))
    except OSError:
        names = []
    for name in names:
        try:
            with open(os.path.join(net, name, "phys_port_name")) as f:
                port = f.read().strip()
        except OSError:
            port = ""
        # The uplink (pN) or, outside switchdev mode, the plain PF netdev.
        if port == "" or (port.startswith("p") and port[1:].isdigit()):
            return name
    raise NotFound(f"PF {pf_address} has no network device under {net}")


_IPROUTE_LOCK = threading.Lock()
_iproute: Any = None


def _with_iproute(fn: Callable[[Any], T]) -> T:
    """``fn(ipr)`` with a kept pyroute2 IPRoute (its VF encoders and
    decoders); pyroute2 gives each thread its own socket under it."""
    global _iproute
    with _IPROUTE_LOCK:
        if _iproute is None:
            # Imported here: only VF changes on a real host (in the
            # privileged helper) use it, and reads should not pay for it.
            from pyroute2 import IPRoute

            _iproute = IPRoute()
        ipr = _iproute
    return fn(ipr)


def vf_settings_from_link(msg: Any, vf_index: int) -> dict[str, Any] | None:
    """VF ``vf_index``'s settings out of a PF's RTM_NEWLINK (asked for with
    RTEXT_FILTER_VF), or None if the PF reports no such VF."""
    vfinfo = msg.get_attr("IFLA_VFINFO_LIST")
    for info in vfinfo.get_attrs("IFLA_VF_INFO") if vfinfo else []:
        mac = info.get_attr("IFLA_VF_MAC")
        if mac is None or mac["vf"] != vf_index:
            continue
        vlan = info.get_attr("IFLA_VF_VLAN") or {}
        trust = info.get_attr("IFLA_VF_TRUST") or {}
        spoof = info.get_attr("IFLA_VF_SPOOFCHK") or {}
        state = info.get_attr("IFLA_VF_LINK_STATE") or {}
        return {
            "mac": mac["mac"],
            "vlan": vlan.get("vlan", 0),
            "qos": vlan.get("qos", 0),
            "trust": bool(trust.get("trust", 0)),
            "spoofchk": bool(spoof.get("spoofchk", 1)),
            "link_state": _LINK_STATES.get(state.get("link_state", 0), "auto"),
        }
    return None


class LinuxKernel:
    """VF settings through netlink on the PF, binding through sysfs."""

    def __init__(self, root: str = "/") -> None:
        self.root = root

    def netdev_renamed(self, old: str, new: str) -> None:
        """Nothing to do: sysfs follows a rename by itself."""

    def get_vf(self, pf_address: str, vf_index: int) -> dict[str, Any]:
        pf = _pf_netdev(self.root, pf_address)
        # One RTM_GETLINK on this thread's kept socket: unprivileged, and
        # without pyroute2's event loop in the caller (nova-compute).
        raw = rtnl.root_socket().get_link(pf, ext_mask=rtnl.RTEXT_FILTER_VF)
        if raw is None:
            raise NotFound(f"PF netdev {pf} does not exist")
        settings = vf_settings_from_link(rtnl.decode_link(raw), vf_index)
        if settings is None:
            raise NotFound(f"PF {pf_address} ({pf}) reports no VF {vf_index}")
        return settings

    def set_vf(self, pf_address: str, vf_index: int, settings: dict[str, Any]) -> None:
        pf = _pf_netdev(self.root, pf_address)
        spec: dict[str, Any] = {"vf": vf_index}
        if "mac" in settings:
            spec["mac"] = settings["mac"]
        if "vlan" in settings:
            spec["vlan"] = {"vlan": settings["vlan"], "qos": settings.get("qos", 0)}
        if "trust" in settings:
            spec["trust"] = int(settings["trust"])
        if "spoofchk" in settings:
            spec["spoofchk"] = int(settings["spoofchk"])
        if "link_state" in settings:
            spec["link_state"] = _LINK_STATE_VALUES[settings["link_state"]]

        from pyroute2.netlink.exceptions import NetlinkError

        def change(ipr: Any) -> None:
            index = ipr.link_lookup(ifname=pf)
            if not index:
                raise NotFound(f"PF netdev {pf} does not exist")
            try:
                ipr.link("set", index=index[0], vf=spec)
            except NetlinkError as e:
                raise HostOperationError(
                    f"cannot set VF {vf_index} of PF {pf_address} ({pf}) to {settings}: "
                    f"{os.strerror(e.code) if e.code else e}"
                ) from e

        _with_iproute(change)

    def bind_driver(self, address: str, driver: str | None) -> str | None:
        """Bind ``address`` to ``driver`` (None: leave unbound); returns the
        driver it had. If ``driver`` does not take the VF, the previous
        driver is bound again (and the error says whether that worked)."""
        dev = confined(self.root, _pci_dir(self.root, address))
        old = current_driver(self.root, address)
        if old == driver:
            return old
        if old is not None:
            types.driver_name(old, f"driver of {address} (its driver link)")
            unbind = confined(self.root, os.path.join(
                self.root, "sys", "bus", "pci", "drivers", old, "unbind"))
        if driver is not None:
            # Every path the bind and a rebind write, checked before the unbind.
            self._probe_paths(dev)
        if old is not None:
            _write(unbind, address)
        if driver is None:
            return old
        now, why = self._probe(dev, address, driver)
        if now == driver:
            return old
        cause = f"binding {address} to {driver} failed: {why or 'it is bound to no driver'}"
        if old is None:
            raise HostOperationError(f"{cause}; it had no driver before")
        if now is not None:
            raise HostOperationError(f"{cause}; its previous driver {old} was not bound again")
        back, why_not = self._probe(dev, address, old)
        if back != old:
            raise HostOperationError(
                f"{cause}; binding its previous driver {old} again failed too "
                f"({why_not or 'it is bound to ' + (back or 'no driver')})"
            )
        raise HostOperationError(f"{cause}; it is back on its previous driver {old}")

    def _probe_paths(self, dev: str) -> tuple[str, str]:
        return (confined(self.root, os.path.join(dev, "driver_override")),
                confined(self.root, os.path.join(self.root, "sys", "bus", "pci", "drivers_probe")))

    def _probe(self, dev: str, address: str, driver: str) -> tuple[str | None, str | None]:
        """Have ``driver`` probe the unbound device: ``driver_override``
        then ``drivers_probe``, the way the kernel binds a driver whose id
        table need not list the device (vfio-pci); the override is cleared
        afterwards. Returns the driver the device has now, and why a
        write failed (None: none did)."""
        override, probe = self._probe_paths(dev)
        why = None
        try:
            _write(override, driver)
            _write(probe, address)
        except HostOperationError as e:
            why = str(e)
        finally:
            # An empty line clears the override so a later probe is not pinned.
            with contextlib.suppress(HostOperationError):
                _write(override, "\n")
        return current_driver(self.root, address), why


def _write(path: str, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as e:
        raise HostOperationError(f"cannot write {value.strip()!r} to {path}: {e.strerror}") from e


class SimulatedKernel:
    """VF state kept under ``<root>/smartnic-sim/vfs/<vf address>.json``."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.state_dir = confined(root, os.path.join(root, SIM_STATE_DIR, "vfs"))
        if not os.path.isdir(self.state_dir):
            raise NotFound(
                f"{root} is not a simulated SmartNIC host ({self.state_dir} missing); "
                "kernel_backend=simulated only works on a tree made by 'smartnic-vif sim create'"
            )

    def _path(self, address: str) -> str:
        return os.path.join(self.state_dir, address + ".json")

    @contextlib.contextmanager
    def state(self, address: str) -> Iterator[dict[str, Any]]:
        """VF ``address``'s state under its lock (flock on the file itself,
        across processes); what the caller changes is written back.

        The file is rewritten in place with one pwrite, never replaced: on
        ext4 a rename over an existing file flushes its data first, which made
        each write cost more than the rest of a VF change. The new text is
        padded with spaces to the old length (JSON allows trailing
        whitespace), so a reader never sees a torn or stale tail."""
        with self._locked(address, writable=True) as (fd, raw):
            state = json.loads(raw)
            before = json.dumps(state, sort_keys=True)
            yield state
            after = json.dumps(state, sort_keys=True)
            if after != before:
                os.pwrite(fd, after.encode().ljust(len(raw)), 0)

    def read_state(self, address: str) -> dict[str, Any]:
        """VF ``address``'s state as it is now (a shared lock: never half a
        write), for readers that may not write the file."""
        with self._locked(address, writable=False) as (_, raw):
            state: dict[str, Any] = json.loads(raw)
            return state

    @contextlib.contextmanager
    def _locked(self, address: str, writable: bool) -> Iterator[tuple[int, bytes]]:
        """The state file's descriptor and contents, under an exclusive lock
        (``writable``) or a shared one; closing the file releases it."""
        path = confined(self.root, self._path(address))
        try:
            # O_NOFOLLOW: the file checked is the file opened.
            fd = os.open(path, (os.O_RDWR if writable else os.O_RDONLY)
                         | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise NotFound(f"simulated host has no VF {address}") from None
        except OSError as e:
            raise HostOperationError(f"cannot open {path}: {e.strerror}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if writable else fcntl.LOCK_SH)
            yield fd, os.pread(fd, os.fstat(fd).st_size, 0)
        finally:
            os.close(fd)

    def netdev_renamed(self, old: str, new: str) -> None:
        """Follow a rename in the tree as sysfs does: the netdev's directory
        under its device and its ``class/net`` link take the new name, so
        discovery after a plug finds the representor under the port's name,
        as on a real host. A name the tree does not have (a tap, a VF netdev
        parked while vfio-pci holds its VF) changes nothing here."""
        class_net = os.path.join(self.root, "sys", "class", "net")
        old_link = os.path.join(class_net, types.ifname(old))
        new_link = os.path.join(class_net, types.ifname(new, "new_name"))
        if not os.path.islink(old_link):
            return
        live = confined(self.root, os.path.realpath(old_link))
        renamed = confined(self.root, os.path.join(os.path.dirname(live), new))
        if os.path.lexists(new_link) or os.path.lexists(renamed):
            raise HostOperationError(
                f"simulated sysfs under {self.root} already has a netdev {new}")
        os.rename(live, renamed)
        # The new link before the old one goes: a discovery reading the tree
        # meanwhile misses the netdev for as short a time as can be.
        os.symlink(os.path.relpath(renamed, class_net), new_link)
        os.unlink(old_link)

    def get_vf(self, pf_address: str, vf_index: int) -> dict[str, Any]:
        state = self.read_state(vf_address(self.root, pf_address, vf_index))
        return {k: state[k] for k in VF_SETTING_KEYS}

    def set_vf(self, pf_address: str, vf_index: int, settings: dict[str, Any]) -> None:
        address = vf_address(self.root, pf_address, vf_index)
        with self.state(address) as state:
            if state.get("fail_set_vf"):
                # Fault injection for tests: what a NIC firmware refusal looks like.
                raise HostOperationError(
                    f"cannot set VF {vf_index} of PF {pf_address}: "
                    f"{os.strerror(errno.EOPNOTSUPP)}"
                )
            state.update(settings)
            if "mac" in settings and current_driver(self.root, address) in state.get(
                    "net_drivers", []):
                self._mirror_mac(state)

    def _mirror_mac(self, state: dict[str, Any]) -> None:
        """Give the VF's netdev (its veth end) the VF's MAC, as a real VF
        netdev takes the MAC set on the PF; only while a network driver holds
        the VF (under vfio-pci there is no netdev to take it). All zeros gives
        the netdev back the address it was made with, as a VF driver reset
        would."""
        if not state.get("netdev") or not state.get("netns"):
            return
        name, ns = self._netdev_names(state)
        mac = state.get("mac")
        if not mac or mac == "00:00:00:00:00:00":
            mac = state.get("netdev_mac")
        if mac:
            with contextlib.suppress(NotFound):
                netdev.set_link(name, netns=ns, mac=types.mac_address(mac, "netdev_mac"))

    def _netdev_names(self, state: dict[str, Any]) -> tuple[str, str | None]:
        """The VF netdev's name and namespace as the state file gives them,
        validated: they are joined into paths."""
        where = f"in {self.state_dir}"
        name = types.ifname(state.get("netdev"), f"netdev {where}")
        ns = state.get("netns")
        return name, netns_name(ns, f"netns {where}") if ns is not None else None

    def bind_driver(self, address: str, driver: str | None) -> str | None:
        """Rewrite the VF's ``driver`` link. A driver the tree lacks fails
        after the unbind, as on a real host, and the previous driver's link
        is put back."""
        dev = confined(self.root, _pci_dir(self.root, address))
        with self.state(address) as state:
            old = current_driver(self.root, address)
            if old == driver:
                return old
            link = confined(self.root, os.path.join(dev, "driver"))
            if old is not None:
                types.driver_name(old, f"driver of {address} (its driver link)")
            drivers = os.path.join(self.root, "sys", "bus", "pci", "drivers")
            targets = {d: confined(self.root, os.path.join(drivers, d))
                       for d in (old, driver) if d is not None}
            # Everything the change touches is checked before the first change.
            moves = self._netdev_paths(dev, address, state)
            present = driver in state.get("net_drivers", [])
            if os.path.islink(link):
                os.unlink(link)
            if driver is not None:
                if not os.path.isdir(targets[driver]):
                    if old is not None:
                        os.symlink(os.path.relpath(targets[old], dev), link)
                    raise HostOperationError(
                        f"binding {address} to {driver} failed: no driver {driver} under "
                        f"{drivers}; "
                        + (f"it is back on its previous driver {old}" if old is not None
                           else "it had no driver before")
                    )
                os.symlink(os.path.relpath(targets[driver], dev), link)
            # A VF bound to a network driver has a netdev; vfio-pci (or no
            # driver) takes it away. Park the netdev's sysfs entry meanwhile.
            if moves is not None:
                self._move_netdev(*moves, present=present)
            if present:
                # The network driver probes the VF and reads the MAC the PF
                # set for it (settings changed while vfio-pci held it).
                self._mirror_mac(state)
            state["driver_changes"] = state.get("driver_changes", 0) + 1
            state["last_bind"] = time.time()
            return old

    def _netdev_paths(self, dev: str, address: str,
                      state: dict[str, Any]) -> tuple[str, str, str] | None:
        """Where the VF's netdev lives while a network driver holds the VF,
        where it is parked meanwhile, and its ``class/net`` link; None if the
        VF has no netdev."""
        if not state.get("netdev"):
            return None
        name, _ = self._netdev_names(state)
        return (confined(self.root, os.path.join(dev, "net", name)),
                confined(self.root, os.path.join(self.state_dir, address + ".net")),
                confined(self.root, os.path.join(self.root, "sys", "class", "net", name)))

    @staticmethod
    def _move_netdev(live: str, parked: str, class_link: str, present: bool) -> None:
        if present and os.path.isdir(parked) and not os.path.exists(live):
            os.makedirs(os.path.dirname(live), exist_ok=True)
            os.replace(parked, live)
            if not os.path.lexists(class_link):
                os.symlink(os.path.relpath(live, os.path.dirname(class_link)), class_link)
        elif not present and os.path.isdir(live):
            os.replace(live, parked)
            if os.path.lexists(class_link):
                os.unlink(class_link)


def kernel_for(backend: str, root: str) -> Kernel:
    if backend == "linux":
        return LinuxKernel(root)
    if backend == "simulated":
        return SimulatedKernel(root)
    raise ValueError(f"unknown kernel_backend {backend!r}")
