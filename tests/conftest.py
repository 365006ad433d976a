pytest_plugins = ["tests.fixtures.ovs", "tests.fixtures.sim"]
