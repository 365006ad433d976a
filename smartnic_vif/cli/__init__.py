"""The ``smartnic-vif`` operator tool.

oslo.config imports netaddr, rfc3986 and stevedore when it is imported (for
its IP address and URI option types and its config drivers), about 45 ms of
a command's start, though the CLI uses none of them: its options are strings,
numbers and lists. Here, before anything imports oslo.config, each of them
that is not loaded yet is put in ``sys.modules`` as a stand-in that imports
the real module the first time one of its names is used (os-vif's plugin
loading uses stevedore, say), and from then on is that module. An ``import``
statement alone does not load it. Only the CLI's process does this.
"""

from __future__ import annotations

import importlib
import sys
import threading
import types
from typing import Any

_DEFERRED = ("netaddr", "rfc3986", "stevedore")
_LOCK = threading.RLock()


class _Deferred(types.ModuleType):
    """Stands in for module ``__name__`` until one of its names is used."""

    def __getattr__(self, attr: str) -> Any:
        return getattr(_load(self), attr)


def _load(stand_in: _Deferred) -> types.ModuleType:
    name = stand_in.__name__
    with _LOCK:
        if sys.modules.get(name) is stand_in:
            del sys.modules[name]
            try:
                real = importlib.import_module(name)
            except BaseException:
                sys.modules[name] = stand_in
                raise
            # Whoever bound the stand-in (``import netaddr`` in oslo.config)
            # now finds the real module's names on it directly.
            vars(stand_in).update(vars(real))
        return sys.modules[name]


for _name in _DEFERRED:
    if _name not in sys.modules:
        sys.modules[_name] = _Deferred(_name)
