"""The simulated SmartNIC host.

A sysfs tree, veth representors, a private OVS and a virtio-forwarder simulator.
"""
