"""The ``smartnic-vif`` operator tool."""
