"""The committed sample configs are what oslo-config-generator makes from the
options in the code: an option added or changed without regenerating fails here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = Path(sys.executable).with_name("oslo-config-generator")


@pytest.mark.parametrize(
    ("namespace", "sample"),
    [
        ("smartnic_vif", "etc/smartnic-vif.conf.sample"),
        ("smartnic_vif.neutron", "etc/neutron-smartnic-ovs.conf.sample"),
    ],
)
def test_sample_config_is_current(tmp_path: Path, namespace: str, sample: str) -> None:
    out = tmp_path / "sample.conf"
    subprocess.run(  # noqa: S603 - fixed argv
        [str(GENERATOR), "--namespace", namespace, "--wrap-width", "79",
         "--output-file", str(out)],
        check=True, cwd=ROOT, env=dict(os.environ),
    )
    assert out.read_text() == (ROOT / sample).read_text(), (
        f"{sample} is stale: regenerate with "
        f"oslo-config-generator --config-file etc/oslo-config-generator/*.conf"
    )


def test_sample_documents_both_plugin_groups() -> None:
    text = (ROOT / "etc/smartnic-vif.conf.sample").read_text()
    for group in ("[os_vif_smartnic]", "[os_vif_agilio_ovs]"):
        assert group in text
    for option in ("sysfs_root", "forwarder_port_control_endpoint", "vendor_hook",
                   "state_path", "pci_device_spec"):
        assert f"#{option} =" in text
