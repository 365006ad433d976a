"""Read Nova's ``[pci]`` options from nova.conf the way Nova does.

Nova declares ``[pci] device_spec`` and ``[pci] alias`` as oslo.config
``MultiStrOpt``s with deprecated names (``[pci] passthrough_whitelist`` and
``[DEFAULT] pci_passthrough_whitelist``; ``[DEFAULT] pci_alias``). The same
declarations are registered here on a private ``ConfigOpts`` and the file is
parsed by oslo.config, so the values (every line of every name, in the order
oslo.config gives Nova) are those nova-compute reads. Nova itself is not
imported. Each value is one JSON object or a list of them; decoding is
:mod:`smartnic_vif.decisions.devspec`'s.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass

from oslo_config import cfg

from smartnic_vif.model.errors import SmartNICError

DEFAULT_PATH = "/etc/nova/nova.conf"

_OPTS = [
    cfg.MultiStrOpt(
        "device_spec",
        default=[],
        deprecated_opts=[
            cfg.DeprecatedOpt("passthrough_whitelist", group="pci"),
            cfg.DeprecatedOpt("pci_passthrough_whitelist", group="DEFAULT"),
        ],
    ),
    cfg.MultiStrOpt("alias", default=[], deprecated_name="pci_alias",
                    deprecated_group="DEFAULT"),
]


class NovaConfigError(SmartNICError):
    """nova.conf cannot be read or parsed; the message is one line naming it."""


@dataclass(frozen=True)
class NovaPci:
    path: str
    device_spec: tuple[str, ...]
    alias: tuple[str, ...]
    deprecated: tuple[str, ...]  # oslo.config's notes on deprecated names in use


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def read_nova_pci(path: str) -> NovaPci:
    """``[pci] device_spec`` and ``alias`` of the nova.conf at ``path``."""
    if not os.path.isfile(path):
        raise NovaConfigError(f"nova config {path}: no such file")
    if not os.access(path, os.R_OK):
        raise NovaConfigError(f"nova config {path}: not readable")
    conf = cfg.ConfigOpts()
    conf.register_opts(_OPTS, group="pci")
    # oslo.config logs each deprecated name it reads; keep those notes for
    # the report instead of letting them reach stderr.
    logger = logging.getLogger("oslo_config.cfg")
    collect = _Collect()
    logger.addHandler(collect)
    propagate, logger.propagate = logger.propagate, False
    try:
        conf(args=[], project="nova", default_config_files=[path], default_config_dirs=[],
             use_env=False, validate_default_values=True)
        device_spec, alias = tuple(conf.pci.device_spec), tuple(conf.pci.alias)
    except cfg.Error as e:
        text = " ".join(str(e).split())
        raise NovaConfigError(f"nova config {path}: {text}") from None
    except OSError as e:
        raise NovaConfigError(f"nova config {path}: {e.strerror or e}") from None
    finally:
        logger.removeHandler(collect)
        logger.propagate = propagate
    return NovaPci(path, device_spec, alias,
                   tuple(dict.fromkeys(_short(m) for m in collect.messages)))


_DEPRECATED = re.compile(r'Option "(?P<old>[^"]+)" from group "(?P<old_group>[^"]+)" is '
                         r'deprecated\. Use option "(?P<new>[^"]+)" from group "(?P<group>[^"]+)"')


def _short(message: str) -> str:
    found = _DEPRECATED.search(message)
    if found is None:
        return " ".join(message.split())
    return (f"[{found['old_group']}] {found['old']} is deprecated: "
            f"rename it [{found['group']}] {found['new']}")


__all__ = ["DEFAULT_PATH", "NovaConfigError", "NovaPci", "read_nova_pci"]
