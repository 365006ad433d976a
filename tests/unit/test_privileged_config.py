"""Where the privileged helper's own configuration comes from.

Nova starts the helper as ``privsep-helper --config-file nova.conf ...``:
oslo.config parses the files before our module is imported, and os-vif never
runs there, so the helper registers the plugin's options itself and reads
them from whichever plugin group sets them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from oslo_config import cfg

from smartnic_vif.host import privileged
from smartnic_vif.model.errors import InvalidValue


def parsed(tmp_path: Path, text: str) -> cfg.ConfigOpts:
    """A ConfigOpts parsed as privsep-helper parses nova.conf, with none of
    our options registered yet."""
    path = tmp_path / "nova.conf"
    path.write_text(text)
    options = cfg.ConfigOpts()
    options(args=["--config-file", str(path)], project="privsep", default_config_files=[])
    return options


def tree(tmp_path: Path) -> Path:
    root = tmp_path / "sim"
    (root / "sys" / "bus" / "pci" / "devices").mkdir(parents=True)
    root.chmod(0o755)
    return root


def test_the_group_nova_uses_is_read_after_parsing(tmp_path: Path) -> None:
    root = tree(tmp_path)
    options = parsed(tmp_path, f"[os_vif_agilio_ovs]\nsysfs_root = {root}/\n"
                               "kernel_backend = simulated\n")
    assert privileged._validated_configuration(options) == ("simulated", os.path.realpath(root))


def test_nothing_configured_is_the_real_host(tmp_path: Path) -> None:
    assert privileged._validated_configuration(parsed(tmp_path, "")) == ("linux", "/")


def test_a_relative_root_is_refused_naming_where_it_was_set(tmp_path: Path) -> None:
    options = parsed(tmp_path, "[os_vif_smartnic]\nsysfs_root = sim\n")
    with pytest.raises(InvalidValue, match=r"invalid \[os_vif_smartnic\] sysfs_root 'sim'"):
        privileged._validated_configuration(options)
