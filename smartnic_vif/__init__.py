"""smartnic-vif: accelerated VM ports for OpenStack compute nodes with SmartNICs.

Package layout (see docs/architecture.md):

- ``model``      plain data: validated identifiers, the host inventory, vnic types.
- ``decisions``  pure functions from a port / VIF and an inventory to a plan.
- ``host``       the only modules with side effects: sysfs discovery, privileged
                 netdev/VF/driver work, OVSDB, the virtio-forwarder client, the
                 plan executor and the durable claim store.
- ``osvif``      the os-vif plugin and its versioned port profiles.
- ``neutron``    the ML2 mechanism driver for SmartNIC OVS hosts.
- ``cli``        the ``smartnic-vif`` operator tool.
- ``sim``        the simulated SmartNIC host used by tests, benchmarks and the demo.
"""

__version__ = "0.1.0"
