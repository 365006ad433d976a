"""Options of the ``smartnic_ovs`` ML2 mechanism driver, group ``[smartnic_ovs]``.

They are read by neutron-server (usually from ``ml2_conf.ini``).
``list_opts()`` is the ``oslo.config.opts`` entry point ``smartnic_vif.neutron``, so
``oslo-config-generator --namespace smartnic_vif.neutron`` prints a sample.
"""

from __future__ import annotations

from neutron_lib.api.definitions import portbindings
from oslo_config import cfg

GROUP = "smartnic_ovs"

#: Where QEMU and virtio-forwarder meet. It matches the default of the
#: ``vhostuser_socket_dir`` option of the compute-node side of this project, so
#: the socket Neutron names is in the directory the host side expects.
DEFAULT_VHOSTUSER_SOCKET_DIR = "/var/lib/vhost_sockets"

OPTS: list[cfg.Opt] = [
    cfg.ListOpt(
        "smartnic_hosts",
        default=[],
        mutable=True,
        help="Hosts (as Neutron knows them: the OVS agent's 'host', which is "
        "the port's binding:host_id) that have a SmartNIC. Shell-style patterns "
        "are accepted (compute-sn-*); matching ignores case. Only these hosts, "
        "and hosts whose OVS agent reports the extension named by "
        "smartnic_agent_extension, get virtio-forwarder ports and agilio_ovs "
        "bindings for switchdev direct ports. Every other OVS host is bound "
        "exactly as by the stock openvswitch driver.",
    ),
    cfg.StrOpt(
        "smartnic_agent_extension",
        help="Optional. Name of an OVS agent extension ([agent] extensions in "
        "the agent's configuration) that only SmartNIC hosts load. An OVS agent "
        "that lists it in the 'extensions' it reports to neutron-server is "
        "treated as a SmartNIC host, in addition to smartnic_hosts. Unset: only "
        "smartnic_hosts counts.",
    ),
    cfg.ListOpt(
        "vnic_type_prohibit_list",
        default=[],
        help="vnic types this driver must not bind, chosen among normal, direct, "
        "smart-nic, vdpa and virtio-forwarder. Use this rather than "
        "[OVS_DRIVER] vnic_type_prohibit_list, which only accepts the vnic types "
        "of the stock driver (and still applies to those).",
    ),
    cfg.StrOpt(
        "vhostuser_socket_dir",
        default=DEFAULT_VHOSTUSER_SOCKET_DIR,
        help="Directory of the vhost-user sockets of virtio-forwarder ports on "
        "SmartNIC hosts. A port's socket is named 'vhu' followed by the start of "
        "the port id, 14 characters in all.",
    ),
    cfg.StrOpt(
        "vhostuser_mode",
        default=portbindings.VHOST_USER_MODE_SERVER,
        choices=[
            (
                portbindings.VHOST_USER_MODE_SERVER,
                "QEMU creates the socket; virtio-forwarder connects to it "
                "(the daemon's vhost-user client mode)",
            ),
            (
                portbindings.VHOST_USER_MODE_CLIENT,
                "virtio-forwarder creates the socket; QEMU connects to it",
            ),
        ],
        help="vhostuser_mode announced to Nova for virtio-forwarder ports: the "
        "role QEMU takes on the vhost-user socket.",
    ),
]


def register_opts(conf: cfg.ConfigOpts = cfg.CONF) -> None:
    """Register the ``[smartnic_ovs]`` options on ``conf``; safe to call again."""
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """Entry point for oslo-config-generator."""
    return [(GROUP, OPTS)]
