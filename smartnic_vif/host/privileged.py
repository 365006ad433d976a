"""The one privileged context, and every function that runs in it.

Only changes go through here. Reads (VF settings, links, sysfs) need no
privilege and run in the caller (:mod:`smartnic_vif.host.backend`).

Each entrypoint validates all of its arguments *inside* the privileged process:
nothing a caller passes (interface names, PCI addresses, MACs, paths) is
trusted. No function here runs a shell or any other program.

The context holds CAP_NET_ADMIN (netlink changes) and CAP_SYS_ADMIN (network
namespaces of the simulated host, sysfs writes); nothing else.

Which tree the VF changes act on, and how (``sysfs_root``,
``kernel_backend``), is this helper's own configuration, never a caller's
argument: :func:`configuration` reads it once, on first use, from the
oslo.config options the helper runs with (see its docstring).
"""

from __future__ import annotations

import functools
import os
import stat
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from oslo_config import cfg
from oslo_privsep import capabilities as caps
from oslo_privsep import priv_context

from smartnic_vif import conf
from smartnic_vif.host import kernel, netdev
from smartnic_vif.model import types
from smartnic_vif.model.errors import HostOperationError, InvalidValue, NotFound

context = priv_context.PrivContext(
    "smartnic_vif",
    cfg_section="smartnic_vif_privileged",
    pypath=__name__ + ".context",
    capabilities=[caps.CAP_NET_ADMIN, caps.CAP_SYS_ADMIN],
)


def start(in_process: bool = False) -> None:
    """Start the privileged helper from a process that is already root.

    Nova starts it through rootwrap/sudo (oslo.privsep's default, on first
    use). The CLI, tests and the demo run as root, so they fork the helper
    directly, which drops every capability but the two above; ``in_process``
    runs the functions in the caller instead (for profiling only).
    """
    if in_process:
        context.set_client_mode(False)
        return
    if os.geteuid() != 0:
        return
    # os-vif's own ovs plugin (normal ports) has its own context; fork it too.
    from vif_plug_ovs import privsep as ovs_privsep

    for ctx in (context, ovs_privsep.vif_plug):
        if ctx.channel is None:
            ctx.start(priv_context.Method.FORK)


def stop() -> None:
    from vif_plug_ovs import privsep as ovs_privsep

    for ctx in (context, ovs_privsep.vif_plug):
        if ctx.channel is not None:
            ctx.stop()


_CONFIG_LOCK = threading.Lock()
_config: tuple[str, str] | None = None
# Where the helper's options are read: the plugin's groups, under either of
# its names (os-vif registers the one Nova uses; the CLI reads the first).
CONFIG_GROUPS = (conf.GROUP, conf.AGILIO_GROUP)


def _configured(options: cfg.ConfigOpts, name: str) -> tuple[str, Any]:
    """(where, value) of option ``name`` in :data:`CONFIG_GROUPS`: the group
    that sets it, or the default if none does. Two groups that set it to
    different values are refused."""
    found: dict[str, Any] = {}
    for group in CONFIG_GROUPS:
        try:
            conf.register(options, group)
        except cfg.DuplicateOptError:
            pass
        try:
            location = options.get_location(name, group)
            if location is not None and location.location is not cfg.Locations.opt_default:
                found[f"[{group}] {name}"] = options[group][name]
        except ValueError as e:
            # oslo.config reports an option's refusal of a value with the
            # refusal as context; name the group and option instead.
            refused = e.__context__
            if isinstance(refused, InvalidValue):
                raise InvalidValue(f"[{group}] {name}", refused.value, refused.reason) from None
            raise
    if len(set(found.values())) > 1:
        raise InvalidValue(
            " and ".join(found), " vs ".join(map(str, found.values())),
            "the privileged helper's configuration sets them differently; set one, "
            "or both the same",
        )
    if found:
        return next(iter(found.items()))
    return f"{name} (default)", options[conf.GROUP][name]


def _validated_configuration(options: cfg.ConfigOpts) -> tuple[str, str]:
    where, backend = _configured(options, "kernel_backend")
    if backend not in ("linux", "simulated"):
        raise InvalidValue(where, backend, "expected linux or simulated")
    where, root = _configured(options, "sysfs_root")
    if not isinstance(root, str) or "\0" in root or not os.path.isabs(root):
        raise InvalidValue(where, root, "expected an absolute path")
    real = os.path.realpath(root)
    if not os.path.isdir(os.path.join(real, "sys", "bus", "pci", "devices")):
        raise InvalidValue(where, root, "not a sysfs tree (no sys/bus/pci/devices)")
    st = os.stat(real)
    if st.st_uid not in (0, os.geteuid()) or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise InvalidValue(where, root, "the privileged helper only changes a tree that "
                           "root owns and no one else may write")
    return backend, real


def configuration() -> tuple[str, str]:
    """``(kernel_backend, sysfs_root)`` of this helper, from its own
    configuration, read and validated on first use (then kept).

    That is oslo.config's global ``CONF``: a helper forked by
    :func:`start` has a copy of its parent's (parsed, with the CLI's
    overrides, when the fork happens); one that Nova starts through
    ``privsep-helper`` parses the same ``--config-file`` arguments Nova was
    started with. Each option is read from ``[os_vif_smartnic]`` or
    ``[os_vif_agilio_ovs]``, whichever sets it (both, only if the same)."""
    global _config
    with _CONFIG_LOCK:
        if _config is None:
            _config = _validated_configuration(cfg.CONF)
        return _config


def _kernel() -> kernel.Kernel:
    return kernel.kernel_for(*configuration())


def _vf_settings(settings: object) -> dict[str, Any]:
    if not isinstance(settings, dict):
        raise InvalidValue("vf_settings", settings, "expected a mapping")
    clean: dict[str, Any] = {}
    for key, value in settings.items():
        if key == "mac":
            clean[key] = types.mac_address(value, "vf_settings.mac")
        elif key in ("vlan", "qos"):
            if key == "qos" and (isinstance(value, bool) or not isinstance(value, int)
                                 or not 0 <= value <= 7):
                raise InvalidValue("vf_settings.qos", value, "expected 0-7")
            clean[key] = types.vlan_id(value, f"vf_settings.{key}") if key == "vlan" else value
        elif key in ("trust", "spoofchk"):
            if not isinstance(value, bool):
                raise InvalidValue(f"vf_settings.{key}", value, "expected true or false")
            clean[key] = value
        elif key == "link_state":
            clean[key] = types.link_state(value, "vf_settings.link_state")
        else:
            raise InvalidValue("vf_settings", key, f"unknown VF setting {key!r}")
    return clean


F = TypeVar("F", bound=Callable[..., Any])


class PortableInvalidValue(InvalidValue):
    """An InvalidValue that oslo.privsep can rebuild in the caller.

    The daemon sends an exception back as its class and ``args`` and the
    caller raises ``cls(*args)``. InvalidValue takes (field, value, reason)
    but its ``args`` is the formatted message, so the caller got a TypeError
    instead; this one keeps the three in ``args`` and the message in ``str``.
    """

    def __init__(self, field: str, value: object, reason: str) -> None:
        super().__init__(field, value, reason)
        self._message = Exception.__str__(self)
        self.args = (field, value, reason)

    def __str__(self) -> str:
        return self._message


def _portable_value(value: object) -> object:
    """``value`` as it can cross the privsep channel: a plain scalar as it is,
    anything else as its repr."""
    if value is not None and not isinstance(value, str | int | float | bool):
        return repr(value)
    return value


def _portable_errors(func: F) -> F:
    """Raise every InvalidValue of ``func`` as a :class:`PortableInvalidValue`
    (a value that is not a plain scalar travels as its repr)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except PortableInvalidValue:
            raise
        except InvalidValue as e:
            raise PortableInvalidValue(e.field, _portable_value(e.value), e.reason) from None

    return wrapper  # type: ignore[return-value]


@context.entrypoint
@_portable_errors
def set_link(
    ifname: str,
    mtu: int | None = None,
    mac: str | None = None,
    up: bool | None = None,
    promisc: bool | None = None,
    new_name: str | None = None,
    or_name: str | None = None,
) -> list[str] | None:
    """Change one link (see :func:`netdev.set_link`); [old name, new name]
    when it was renamed."""
    for field, flag in (("up", up), ("promisc", promisc)):
        if flag is not None and not isinstance(flag, bool):
            raise InvalidValue(field, flag, "expected true or false")
    renamed = netdev.set_link(
        types.ifname(ifname),
        mtu=types.mtu(mtu) if mtu is not None else None,
        mac=types.unicast_mac(mac) if mac is not None else None,
        up=up,
        promisc=promisc,
        new_name=types.ifname(new_name, "new_name") if new_name is not None else None,
        or_name=types.ifname(or_name, "or_name") if or_name is not None else None,
    )
    if renamed is None:
        return None
    # The kernel renames a netdev's sysfs entries itself; the simulated
    # host's tree is renamed here, as the kernel would.
    _kernel().netdev_renamed(*renamed)
    return list(renamed)


@context.entrypoint
@_portable_errors
def set_vf(pf_address: str, vf_index: int, settings: dict[str, Any]) -> None:
    pf = types.pci_address(pf_address, "pf_address")
    index = types.vf_index(vf_index)
    clean = _vf_settings(settings)
    _kernel().set_vf(pf, index, clean)


@context.entrypoint
@_portable_errors
def bind_driver(address: str, driver: str | None) -> str | None:
    pci = types.pci_address(address)
    name = types.driver_name(driver) if driver is not None else None
    return _kernel().bind_driver(pci, name)


@context.entrypoint
@_portable_errors
def helper_configuration() -> list[str]:
    """What :func:`configuration` gives inside the helper: the tree and the
    backend its VF changes use (callers check theirs agree)."""
    return list(configuration())


# Every change a batch may name: the entrypoints above. Called inside the
# daemon, they run there directly (no second round trip).
_CHANGES: dict[str, Callable[..., Any]] = {
    "set_link": set_link,
    "set_vf": set_vf,
    "bind_driver": bind_driver,
}
# What an error in a batch comes back as: (class name, args). Only these
# are rebuilt as themselves; anything else becomes a HostOperationError.
_ERROR_CLASSES: dict[str, type[Exception]] = {
    "InvalidValue": PortableInvalidValue,
    "NotFound": NotFound,
    "HostOperationError": HostOperationError,
}


@context.entrypoint
def apply(changes: list[Any], keep_going: bool = False) -> list[Any]:
    """Run several of the changes above in one round trip, in order.

    ``changes``: ``[name, kwargs]`` pairs. Returns one outcome per change
    that ran: ``["ok", result]`` or ``["error", class name, args]``. After
    an error the rest do not run, unless ``keep_going`` (undo, which
    restores as much as it can)."""
    if not isinstance(changes, list | tuple) or not isinstance(keep_going, bool):
        raise PortableInvalidValue("changes", repr(changes)[:200], "expected a list of changes")
    outcomes: list[Any] = []
    for change in changes:
        try:
            if (not isinstance(change, list | tuple) or len(change) != 2
                    or change[0] not in _CHANGES or not isinstance(change[1], dict)
                    or not all(isinstance(k, str) for k in change[1])):
                raise InvalidValue("change", repr(change)[:200],
                                   f"expected [name, kwargs] with a name in {sorted(_CHANGES)}")
            outcomes.append(["ok", _CHANGES[change[0]](**change[1])])
        except Exception as e:  # carried back as data, one per change
            outcomes.append(["error", *_error_as_data(e)])
            if not keep_going:
                break
    return outcomes


def _error_as_data(e: Exception) -> tuple[str, list[Any]]:
    if isinstance(e, InvalidValue):
        return "InvalidValue", [e.field, _portable_value(e.value), e.reason]
    if isinstance(e, NotFound):
        return "NotFound", [str(e)]
    if isinstance(e, HostOperationError):
        return "HostOperationError", [str(e)]
    # A TypeError from unexpected keyword arguments, for one.
    return "HostOperationError", [f"{type(e).__name__}: {e}"]


def error_from_data(name: str, args: list[Any]) -> Exception:
    """The exception an ``["error", name, args]`` outcome of :func:`apply` stands for."""
    cls = _ERROR_CLASSES.get(name, HostOperationError)
    try:
        return cls(*args)
    except TypeError:
        return HostOperationError(f"{name}: {args!r}")
