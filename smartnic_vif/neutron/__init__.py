"""Neutron side of smartnic-vif: the ``smartnic_ovs`` ML2 mechanism driver.

- ``mech_driver``: ``SmartNICOVSMechanismDriver``, which replaces ``openvswitch``
  in ``[ml2] mechanism_drivers`` and binds accelerated ports on SmartNIC hosts.
- ``config``: its ``[smartnic_ovs]`` options and the oslo-config-generator hook.

See docs/neutron.md for the operator's view.
"""
