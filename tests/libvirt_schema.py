"""libvirt's own schema check for guest XML, shared by the test folders.

An ``<interface>`` is a device of a domain, so it is checked with libvirt's
``domain`` schema inside a minimal domain (``virt-xml-validate``'s
``interface`` schema is for host interfaces, a different document).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

VIRT_XML_VALIDATE = shutil.which("virt-xml-validate")


def domain_xml(interfaces: list[str], memory_backing: str = "") -> str:
    return (
        "<domain type='kvm'><name>smartnic-test</name>"
        "<memory unit='KiB'>1048576</memory>"
        "<os><type arch='x86_64'>hvm</type></os>"
        f"{memory_backing}<devices>{''.join(interfaces)}</devices></domain>"
    )


def validate(document: str, schema: str = "domain") -> None:
    """Run virt-xml-validate (argv, no shell) on ``document``; fail with its output."""
    assert VIRT_XML_VALIDATE, "virt-xml-validate is required (apt-get install libvirt-clients)"
    # virt-xml-validate is a shell script around xmllint, which libvirt-clients
    # does not depend on; without it every document "fails" with status 127.
    assert shutil.which("xmllint"), "xmllint is required (apt-get install libxml2-utils)"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{schema}.xml"
        path.write_text(document)
        result = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [VIRT_XML_VALIDATE, str(path), schema], capture_output=True, text=True, timeout=30
        )
    assert result.returncode == 0, f"{result.stdout}{result.stderr}\n{document}"
