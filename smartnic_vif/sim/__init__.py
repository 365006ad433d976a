"""The simulated SmartNIC host: sysfs tree, veth representors, private OVS, virtio-forwarder simulator."""
