"""The os-vif plugin (``smartnic`` and ``agilio_ovs``) and its port profiles."""
