"""ML2 mechanism driver ``smartnic_ovs``: Open vSwitch hosts with and without SmartNICs.

It goes in ``[ml2] mechanism_drivers`` where ``openvswitch`` would be and works
with the stock neutron-openvswitch-agent. It is the stock
``OpenvswitchMechanismDriver`` (subclassed, not rewritten) plus two accelerated
bindings that upstream Nova already understands (vif_type ``agilio_ovs``):

============================  =========================  ===========================
vnic type                     SmartNIC host              classic OVS host
============================  =========================  ===========================
normal, smart-nic, vdpa       stock (ovs / vhostuser)    stock
direct + switchdev capability ``agilio_ovs``, OVS        stock (``ovs``)
                              details
direct without switchdev      not bound (SR-IOV driver)  not bound (SR-IOV driver)
virtio-forwarder              ``agilio_ovs``, vhost-user not bound
macvtap, direct-physical,     not bound                  not bound
baremetal, remote-managed,
accelerator-*
============================  =========================  ===========================

How a host is known to be a SmartNIC host
-----------------------------------------
The OVS agent's report (``configurations``) has no key that says so: its keys
are fixed in the agent's code; ``ovs_capabilities`` only lists OVSDB's
``datapath_types`` and ``iface_types``, which are the same on a SmartNIC host
whose OVS uses the kernel datapath with TC offload; OVS's
``other_config:hw-offload`` is read by the agent but not reported; and
``baremetal_smartnic`` means something else (the agent runs on an Ironic DPU).
So the decision is made on the server:

1. ``[smartnic_ovs] smartnic_hosts``: host names or shell-style patterns,
   compared without case with the OVS agent's ``host`` (which is the port's
   ``binding:host_id``). Read at every binding, so no agent change is needed.
2. Optionally ``[smartnic_ovs] smartnic_agent_extension``: the name of an OVS
   agent extension that only SmartNIC hosts load. The agent reports the names of
   the extensions it loaded (``configurations['extensions']``), so a host that
   lists it is a SmartNIC host too. That is the only operator-controlled,
   agent-reported value that fits; it needs an extension actually installed on
   those hosts, because the agent drops names it cannot load.

A host that is neither gets exactly the stock driver's bindings.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Mapping
from typing import Any

from neutron.plugins.ml2.drivers.openvswitch.mech_driver import mech_openvswitch
from neutron_lib import constants as n_const
from neutron_lib.api.definitions import portbindings
from neutron_lib.plugins.ml2 import api, ovs_constants
from oslo_config import cfg
from oslo_log import log

from smartnic_vif.neutron import config

LOG = log.getLogger(__name__)

# Registered at import, as the stock driver does for [OVS_DRIVER], so the
# options exist as soon as ML2 loads the driver's module.
config.register_opts()

#: The vnic types this driver may bind: the stock driver's and virtio-forwarder.
#: ``[smartnic_ovs] vnic_type_prohibit_list`` may only name these.
KNOWN_VNIC_TYPES: tuple[str, ...] = (
    portbindings.VNIC_NORMAL,
    portbindings.VNIC_DIRECT,
    portbindings.VNIC_SMARTNIC,
    portbindings.VNIC_VHOST_VDPA,
    portbindings.VNIC_VIRTIO_FORWARDER,
)

#: Capability Nova copies from a VF into ``binding:profile['capabilities']``
#: when the VF's PF is in switchdev mode, i.e. the VF has an OVS representor.
SWITCHDEV_CAPABILITY = "switchdev"

# Nova cuts device names to 14 characters (nova.network.model.NIC_NAME_LEN) and
# the stock driver names vhost-user sockets the same way, so the socket, the tap
# name Nova gives the port and the representor name share one recognisable form.
_SOCKET_NAME_LEN = 14


def is_smartnic_agent(
    agent: Mapping[str, Any],
    smartnic_hosts: Iterable[str],
    agent_extension: str | None = None,
) -> bool:
    """Whether ``agent`` (an agents_db entry) runs on a SmartNIC host.

    True when the agent's host matches one of ``smartnic_hosts`` (exact names
    or shell-style patterns, case ignored), or when ``agent_extension`` is set
    and the agent reports an extension of that name.
    """
    host = str(agent.get("host") or "").lower()
    if host:
        for pattern in smartnic_hosts:
            pattern = pattern.strip().lower()
            if pattern and fnmatch.fnmatchcase(host, pattern):
                return True
    if agent_extension:
        configurations = agent.get("configurations") or {}
        return agent_extension in (configurations.get("extensions") or [])
    return False


def has_switchdev_capability(port: Mapping[str, Any]) -> bool:
    """Whether the port's binding profile says its VF has a representor."""
    profile = port.get(portbindings.PROFILE) or {}
    return SWITCHDEV_CAPABILITY in (profile.get("capabilities") or [])


def vhostuser_socket_path(socket_dir: str, port_id: str) -> str:
    """The vhost-user socket of a virtio-forwarder port: ``<dir>/vhu<port id>``
    cut to 14 characters."""
    name = (n_const.VHOST_USER_DEVICE_PREFIX + port_id)[:_SOCKET_NAME_LEN]
    return os.path.join(socket_dir, name)


def _vnic_type(port: Mapping[str, Any]) -> str:
    return str(port.get(portbindings.VNIC_TYPE) or portbindings.VNIC_NORMAL)


class SmartNICOVSMechanismDriver(mech_openvswitch.OpenvswitchMechanismDriver):
    """The stock OVS mechanism driver plus SmartNIC bindings (``agilio_ovs``)."""

    supported_vnic_types: list[str]

    def __init__(self) -> None:
        # The stock constructor applies [OVS_DRIVER] vnic_type_prohibit_list to
        # its own vnic types (and rejects virtio-forwarder there), registers the
        # QoS and log drivers and sets the common vif_details.
        super().__init__()
        candidates: list[str] = [*self.supported_vnic_types, portbindings.VNIC_VIRTIO_FORWARDER]
        self.supported_vnic_types = self._apply_prohibit_list(
            candidates, cfg.CONF[config.GROUP].vnic_type_prohibit_list
        )
        LOG.info(
            "smartnic_ovs: binds vnic types %s; SmartNIC hosts %s, agent extension %s",
            self.supported_vnic_types,
            cfg.CONF[config.GROUP].smartnic_hosts or "(none listed)",
            cfg.CONF[config.GROUP].smartnic_agent_extension or "(not used)",
        )

    @staticmethod
    def _apply_prohibit_list(candidates: list[str], prohibited: Iterable[str]) -> list[str]:
        prohibited = [v.strip() for v in prohibited if v.strip()]
        valid = set(KNOWN_VNIC_TYPES) | set(candidates)
        unknown = sorted(set(prohibited) - valid)
        if unknown:
            raise ValueError(
                f"[{config.GROUP}] vnic_type_prohibit_list names {unknown}, which "
                f"are not vnic types of this driver; valid: {sorted(valid)}"
            )
        remaining = [v for v in candidates if v not in prohibited]
        if not remaining:
            raise ValueError(
                f"[{config.GROUP}] vnic_type_prohibit_list (with [OVS_DRIVER] "
                "vnic_type_prohibit_list) leaves the smartnic_ovs driver no vnic type"
            )
        return remaining

    def is_smartnic_host(self, agent: Mapping[str, Any]) -> bool:
        """Whether ``agent`` is on a SmartNIC host, per the current configuration."""
        # Read at every call: smartnic_hosts is mutable, and a reload must not
        # need a new driver object.
        opts = cfg.CONF[config.GROUP]
        return is_smartnic_agent(agent, opts.smartnic_hosts, opts.smartnic_agent_extension)

    def _binds_accelerated(self, context: api.PortContext, agent: Mapping[str, Any]) -> bool:
        """Whether this port on this agent gets the ``agilio_ovs`` vif_type."""
        port = context.current
        vnic_type = _vnic_type(port)
        if vnic_type == portbindings.VNIC_VIRTIO_FORWARDER:
            return self.is_smartnic_host(agent)
        if vnic_type == portbindings.VNIC_DIRECT:
            return has_switchdev_capability(port) and self.is_smartnic_host(agent)
        return False

    def try_to_bind_segment_for_agent(
        self, context: api.PortContext, segment: Mapping[str, Any], agent: Mapping[str, Any]
    ) -> bool:
        # virtio-forwarder needs the daemon and a VF representor: refuse it on
        # classic hosts so ML2 reports a failed binding instead of a port that
        # Nova's agilio_ovs path could never plug there.
        if _vnic_type(context.current) == portbindings.VNIC_VIRTIO_FORWARDER and (
            not self.is_smartnic_host(agent)
        ):
            LOG.debug(
                "smartnic_ovs: not binding virtio-forwarder port %s: host %s is not "
                "a SmartNIC host",
                context.current["id"],
                agent.get("host"),
            )
            return False
        return bool(super().try_to_bind_segment_for_agent(context, segment, agent))

    def get_vif_type(self, context: api.PortContext, agent: Mapping[str, Any], segment: Any) -> str:
        if self._binds_accelerated(context, agent):
            return portbindings.VIF_TYPE_AGILIO_OVS
        return str(super().get_vif_type(context, agent, segment))

    def get_vif_details(
        self, context: api.PortContext, agent: Mapping[str, Any], segment: Any
    ) -> dict[str, Any]:
        if _vnic_type(
            context.current
        ) == portbindings.VNIC_VIRTIO_FORWARDER and self._binds_accelerated(context, agent):
            return self.virtio_forwarder_vif_details(context, agent)
        # Everything else, switchdev direct ports included, gets the stock
        # details; the stock code asks get_vif_type, so an accelerated direct
        # port gets the OVS (not vhost-user) set.
        return dict(super().get_vif_details(context, agent, segment))

    def virtio_forwarder_vif_details(
        self, context: api.PortContext, agent: Mapping[str, Any]
    ) -> dict[str, Any]:
        """vif_details Nova turns into a ``VIFVHostUser`` on the ``agilio_ovs`` plugin.

        Nova reads ``vhostuser_socket`` (required), ``vhostuser_mode`` and
        ``bridge_name``; the others keep Nova from expecting a hybrid bridge or
        a tap device and tell the host which datapath the bridge uses.
        """
        opts = cfg.CONF[config.GROUP]
        configurations = agent.get("configurations") or {}
        details: dict[str, Any] = {
            portbindings.VIF_DETAILS_CONNECTIVITY: self.connectivity,
            # The guest's packets reach OVS through the VF representor, not a
            # tap Nova could filter; nothing is filtered on the Nova side.
            portbindings.CAP_PORT_FILTER: False,
            portbindings.OVS_HYBRID_PLUG: False,
            portbindings.VHOST_USER_MODE: opts.vhostuser_mode,
            # The representor is what goes into br-int, with the port's iface-id.
            portbindings.VHOST_USER_OVS_PLUG: True,
            portbindings.VHOST_USER_SOCKET: vhostuser_socket_path(
                opts.vhostuser_socket_dir, context.current["id"]
            ),
            portbindings.OVS_DATAPATH_TYPE: configurations.get(
                "datapath_type", ovs_constants.OVS_DATAPATH_SYSTEM
            ),
        }
        # The stock helper: the agent's integration bridge, or the trunk bridge
        # when the trunk service answers the OVS_BRIDGE_NAME callback.
        self._set_bridge_name(context.current, details, agent)
        return details
