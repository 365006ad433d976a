"""Configuration options shared by the CLI, the os-vif plugin and the simulator.

All options live in one list. The os-vif plugin receives them from os-vif under
``[os_vif_smartnic]`` (or ``[os_vif_agilio_ovs]`` when Nova selects the plugin by
its upstream name); the CLI reads ``[os_vif_smartnic]`` from the same file, by
default ``/etc/smartnic-vif/smartnic-vif.conf``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from oslo_config import cfg
from oslo_config import types as cfg_types

from smartnic_vif.model import types

GROUP = "os_vif_smartnic"
AGILIO_GROUP = "os_vif_agilio_ovs"
DEFAULT_CONFIG_FILE = "/etc/smartnic-vif/smartnic-vif.conf"



class _Checked(cfg_types.String):
    """A string option checked by one of :mod:`smartnic_vif.model.types`'
    validators when it is read, so a bad value in a config file is refused
    (naming the file and the option) before anything uses it."""

    def __init__(self, check: Callable[[str], object]) -> None:
        super().__init__()
        self.check = check

    def __call__(self, value: Any) -> str:
        value = super().__call__(value)
        self.check(value)  # InvalidValue is a ValueError, which oslo.config reports
        return str(value)

    def __eq__(self, other: object) -> bool:
        return super().__eq__(other) and self.check == getattr(other, "check", None)

    __hash__ = None  # type: ignore[assignment]


ABSOLUTE_PATH = _Checked(types.absolute_path)


def _no_hook_or_absolute_path(value: str) -> str:
    """``vendor_hook``: empty (no hook) or an absolute path."""
    return value if value == "" else types.absolute_path(value)

OPTS: list[cfg.Opt] = [
    cfg.Opt(
        "sysfs_root",
        default="/",
        type=ABSOLUTE_PATH,
        help="Directory under which sysfs is read (sys/bus/pci, sys/class/net). "
        "'/' on a real host; the simulated host points it at its generated tree.",
    ),
    cfg.StrOpt(
        "kernel_backend",
        default="linux",
        choices=[
            ("linux", "VF settings through netlink on the PF, driver binding through sysfs"),
            ("simulated", "record VF settings and driver binding in the simulated host's tree"),
        ],
        help="How kernel-only VF operations are carried out.",
    ),
    cfg.Opt(
        "ovsdb_connection",
        default="unix:/var/run/openvswitch/db.sock",
        type=_Checked(types.ovsdb_connection),
        help="OVSDB server the plugin talks to (ovsdbapp native IDL), "
        "e.g. unix:/var/run/openvswitch/db.sock or tcp:127.0.0.1:6640.",
    ),
    cfg.IntOpt("ovsdb_timeout", default=10, min=1, help="Seconds to wait for OVSDB."),
    cfg.StrOpt(
        "integration_bridge",
        default="br-int",
        help="Bridge used when a VIF does not name one (the CLI's default).",
    ),
    cfg.StrOpt(
        "default_datapath_type",
        default="system",
        choices=list(types.DATAPATH_TYPES),
        help="datapath_type given to a bridge this project creates. An existing "
        "bridge's datapath_type is never changed.",
    ),
    cfg.IntOpt(
        "network_device_mtu",
        default=1500,
        min=68,
        max=65535,
        help="MTU used when the VIF's network carries none.",
    ),
    cfg.Opt(
        "forwarder_port_control_endpoint",
        default="ipc:///var/run/virtio-forwarder/port_control",
        type=_Checked(types.zmq_endpoint),
        help="ZeroMQ endpoint of virtio-forwarder's port control socket.",
    ),
    cfg.Opt(
        "forwarder_stats_endpoint",
        default="ipc:///var/run/virtio-forwarder/stats",
        type=_Checked(types.zmq_endpoint),
        help="ZeroMQ endpoint of virtio-forwarder's stats socket.",
    ),
    cfg.FloatOpt(
        "forwarder_timeout",
        default=2.0,
        min=0.05,
        help="Seconds to wait for a reply from virtio-forwarder (the daemon's own client waits 2).",
    ),
    cfg.Opt(
        "vfio_driver",
        default="vfio-pci",
        type=_Checked(types.driver_name),
        help="Driver a VF is bound to when virtio-forwarder relays it.",
    ),
    cfg.Opt(
        "state_path",
        default="/var/lib/smartnic-vif",
        type=ABSOLUTE_PATH,
        help="Directory for durable state: the VF claim database (state.db), "
        "saved VF settings and per-VF lock files.",
    ),
    cfg.Opt(
        "vendor_hook",
        type=_Checked(_no_hook_or_absolute_path),
        help="Optional executable run (argv only, never a shell) before plug, after "
        "plug and after unplug: <phase> <mode> <vf pci address> <representor> <mac> "
        "<vhost socket path or '-'>. A non-zero exit fails the plug and undoes it.",
    ),
    cfg.FloatOpt("vendor_hook_timeout", default=30.0, min=0.1, help="Seconds the hook may run."),
    cfg.MultiStrOpt(
        "pci_device_spec",
        default=[],
        help="A copy of Nova's [pci] device_spec entries (JSON, one per line, as in "
        "nova.conf; 'smartnic-vif pci-spec' prints them) for hosts without Nova: the "
        "standalone 'attach' selects VFs with them (physical_network and trusted "
        "tags). 'doctor' reads nova.conf itself (--nova-config, default "
        "/etc/nova/nova.conf) and checks this copy only when no nova.conf is readable.",
    ),
    cfg.Opt(
        "vhostuser_socket_dir",
        default="/var/lib/vhost_sockets",
        type=ABSOLUTE_PATH,
        help="Directory of vhost-user sockets, used by the CLI to name a forwarder port's "
        "socket; a socket path must be inside it or one of vhostuser_socket_dirs.",
    ),
    cfg.ListOpt(
        "vhostuser_socket_dirs",
        default=[],
        item_type=ABSOLUTE_PATH,
        help="Further directories where a forwarder port's vhost-user socket may be "
        "(besides vhostuser_socket_dir).",
    ),
    cfg.BoolOpt(
        "vhostuser_socket_dir_check",
        default=True,
        help="Refuse a vhost-user socket path outside vhostuser_socket_dir and "
        "vhostuser_socket_dirs (QEMU in server mode deletes what is at the path). "
        "Paths are always checked for their form and for an existing file that is "
        "not a socket.",
    ),
]


def vhost_socket_dirs(group: Any) -> tuple[str, ...]:
    """The directories a vhost-user socket must be inside; () when the check is off."""
    if not group.vhostuser_socket_dir_check:
        return ()
    return tuple(d for d in (group.vhostuser_socket_dir, *group.vhostuser_socket_dirs) if d)


def register(conf: cfg.ConfigOpts, group: str = GROUP) -> None:
    conf.register_opts(OPTS, group=group)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """Entry point for oslo-config-generator."""
    return [(GROUP, OPTS), (AGILIO_GROUP, OPTS)]


def load(config_files: Sequence[str] | None = None, conf: cfg.ConfigOpts | None = None) -> Any:
    """Read the config files into ``conf`` (a fresh ConfigOpts by default) and
    return the ``[os_vif_smartnic]`` group."""
    conf = conf if conf is not None else cfg.ConfigOpts()
    register(conf)
    conf(args=[], project="smartnic-vif", default_config_files=list(config_files or []))
    return conf[GROUP]
