pytest_plugins = ["tests.fixtures.ovs"]
