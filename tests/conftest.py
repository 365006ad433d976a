"""Shared test set-up.

oslo.service picks its backend once per process; os-vif, Nova and Neutron
imports would otherwise pick eventlet or threading in whatever order the test
folders load. Threading, as Nova runs without eventlet patching, is chosen
here before anything else is imported.
"""

import os

import oslo_service.backend as oslo_service_backend

os.environ.setdefault("OS_NOVA_DISABLE_EVENTLET_PATCHING", "1")
oslo_service_backend.register_backend_default_hook(
    lambda: oslo_service_backend.BackendType.THREADING
)

pytest_plugins = [
    "tests.fixtures.ovs", "tests.fixtures.plugin", "tests.fixtures.remote_host",
    "tests.fixtures.sim",
]
