"""Configuration options shared by the CLI, the os-vif plugin and the simulator.

All options live in one list. The os-vif plugin receives them from os-vif under
``[os_vif_smartnic]`` (or ``[os_vif_agilio_ovs]`` when Nova selects the plugin by
its upstream name); the CLI reads ``[os_vif_smartnic]`` from the same file, by
default ``/etc/smartnic-vif/smartnic-vif.conf``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from oslo_config import cfg

from smartnic_vif.model import types

GROUP = "os_vif_smartnic"
AGILIO_GROUP = "os_vif_agilio_ovs"
DEFAULT_CONFIG_FILE = "/etc/smartnic-vif/smartnic-vif.conf"

OPTS: list[cfg.Opt] = [
    cfg.StrOpt(
        "sysfs_root",
        default="/",
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
    cfg.StrOpt(
        "ovsdb_connection",
        default="unix:/var/run/openvswitch/db.sock",
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
    cfg.StrOpt(
        "forwarder_port_control_endpoint",
        default="ipc:///var/run/virtio-forwarder/port_control",
        help="ZeroMQ endpoint of virtio-forwarder's port control socket.",
    ),
    cfg.StrOpt(
        "forwarder_stats_endpoint",
        default="ipc:///var/run/virtio-forwarder/stats",
        help="ZeroMQ endpoint of virtio-forwarder's stats socket.",
    ),
    cfg.FloatOpt(
        "forwarder_timeout",
        default=2.0,
        min=0.05,
        help="Seconds to wait for a reply from virtio-forwarder (the daemon's own client waits 2).",
    ),
    cfg.StrOpt(
        "vfio_driver",
        default="vfio-pci",
        help="Driver a VF is bound to when virtio-forwarder relays it.",
    ),
    cfg.StrOpt(
        "state_path",
        default="/var/lib/smartnic-vif",
        help="Directory for durable state: the VF claim database (state.db), "
        "saved VF settings and per-VF lock files.",
    ),
    cfg.StrOpt(
        "vendor_hook",
        help="Optional executable run (argv only, never a shell) before plug, after "
        "plug and after unplug: <phase> <mode> <vf pci address> <representor> <mac> "
        "<vhost socket path or '-'>. A non-zero exit fails the plug and undoes it.",
    ),
    cfg.FloatOpt("vendor_hook_timeout", default=30.0, min=0.1, help="Seconds the hook may run."),
    cfg.MultiStrOpt(
        "pci_device_spec",
        default=[],
        help="This host's Nova [pci] device_spec entries (JSON, one per line, as in "
        "nova.conf; 'smartnic-vif pci-spec' prints them). The CLI selects VFs with "
        "them (physical_network and trusted tags) and 'doctor' checks them against "
        "the inventory.",
    ),
    cfg.StrOpt(
        "vhostuser_socket_dir",
        default="/var/lib/vhost_sockets",
        help="Directory of vhost-user sockets, used by the CLI to name a forwarder port's "
        "socket; a socket path must be inside it or one of vhostuser_socket_dirs.",
    ),
    cfg.ListOpt(
        "vhostuser_socket_dirs",
        default=[],
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
