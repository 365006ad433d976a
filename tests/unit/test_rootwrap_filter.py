"""The shipped nova-rootwrap filter and nova.conf snippet agree with what
oslo.privsep runs to start the plugin's helper.

``etc/nova-smartnic-vif.conf.sample`` sets ``[smartnic_vif_privileged]
helper_command``; oslo.privsep appends the context and socket arguments.
``etc/rootwrap.d/smartnic-vif.filters`` must allow that command and
oslo.privsep's default one (Nova's root helper, one ``--config-file``), and
nothing else. (oslo.rootwrap also always adds a filter of its own that lets
privsep-helper through; these tests look at the shipped lines only.)
"""

from __future__ import annotations

import configparser
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
from oslo_config import cfg
from oslo_privsep import priv_context
from oslo_rootwrap import filters, wrapper

from smartnic_vif.host import privileged

ROOT = Path(__file__).resolve().parents[2]
FILTERS = ROOT / "etc" / "rootwrap.d"
SAMPLE = ROOT / "etc" / "nova-smartnic-vif.conf.sample"
GROUP = "smartnic_vif_privileged"
CONTEXT = "smartnic_vif.host.privileged.context"
SOCK = "/tmp/tmpk2j4x8/privsep.sock"
NOVA_ROOT_HELPER = ["sudo", "nova-rootwrap", "/etc/nova/rootwrap.conf"]


def shipped_filters() -> list[filters.CommandFilter]:
    loaded = wrapper.load_filters([str(FILTERS)])
    # The last one is oslo.rootwrap's own privsep-helper filter.
    own = [f for f in loaded if f.name != "privsep-helper"]
    assert own and all(isinstance(f, filters.RegExpFilter) for f in own)
    return own


def allowed(argv: list[str]) -> bool:
    return any(f.match(argv) for f in shipped_filters())


def sample() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(SAMPLE)
    return parser


@pytest.fixture
def sample_helper_command() -> Iterator[str]:
    command = sample()[GROUP]["helper_command"]
    cfg.CONF.set_override("helper_command", command, group=GROUP)
    try:
        yield command
    finally:
        cfg.CONF.clear_override("helper_command", group=GROUP)


def test_the_command_oslo_privsep_runs_with_the_sample_helper_command_is_allowed(
    sample_helper_command: str,
) -> None:
    argv = privileged.context.helper_command(SOCK)
    assert argv == [*shlex.split(sample_helper_command), "--privsep_context", CONTEXT,
                    "--privsep_sock_path", SOCK]
    assert argv[:3] == NOVA_ROOT_HELPER
    assert allowed(argv[3:])


def test_oslo_privsep_default_command_for_one_config_file_is_allowed() -> None:
    # nova/cmd/compute.py: priv_context.init(root_helper=sudo nova-rootwrap
    # ...), then oslo.privsep adds privsep-helper and Nova's config files.
    argv = ["privsep-helper", "--config-file", "/etc/nova/nova.conf",
            "--privsep_context", CONTEXT, "--privsep_sock_path", SOCK]
    assert allowed(argv)


@pytest.mark.parametrize(
    ("what", "argv"),
    [
        ("another context", ["privsep-helper", "--config-file", "/etc/nova/nova.conf",
                             "--privsep_context", "nova.privsep.sys_admin_pctxt",
                             "--privsep_sock_path", SOCK]),
        ("a config file outside /etc", ["privsep-helper", "--config-file", "/var/tmp/n.conf",
                                        "--privsep_context", CONTEXT,
                                        "--privsep_sock_path", SOCK]),
        ("'..' in a config path", ["privsep-helper", "--config-file",
                                   "/etc/nova/../../var/tmp/n.conf", "--privsep_context",
                                   CONTEXT, "--privsep_sock_path", SOCK]),
        ("a config directory", ["privsep-helper", "--config-file", "/etc/nova/nova.conf",
                                "--config-dir", "/etc/nova/nova.conf.d", "--privsep_context",
                                CONTEXT, "--privsep_sock_path", SOCK]),
        ("a socket outside /tmp", ["privsep-helper", "--config-file", "/etc/nova/nova.conf",
                                   "--privsep_context", CONTEXT,
                                   "--privsep_sock_path", "/run/x/privsep.sock"]),
        ("three config files", ["privsep-helper", *["--config-file", "/etc/a.conf"] * 3,
                                "--privsep_context", CONTEXT, "--privsep_sock_path", SOCK]),
    ],
)
def test_anything_else_is_not(what: str, argv: list[str]) -> None:
    assert not allowed(argv), what


def test_the_sample_sets_only_options_of_the_helper_and_they_parse() -> None:
    options = cfg.ConfigOpts()
    options.register_opts(priv_context.OPTS, group=GROUP)
    options(args=["--config-file", str(SAMPLE)], project="nova", default_config_files=[],
            default_config_dirs=[])
    names = {opt.dest for opt in priv_context.OPTS}
    assert set(sample()[GROUP]) <= names
    assert options[GROUP].helper_command == sample()[GROUP]["helper_command"]
    assert options[GROUP].logger_name == "smartnic_vif.privileged"


def test_the_capabilities_the_sample_names_are_the_contexts() -> None:
    text = SAMPLE.read_text()
    [line] = [ln for ln in text.splitlines() if ln.startswith("#capabilities =")]
    names = [n.strip() for n in line.split("=", 1)[1].split(",")]
    caps = [priv_context.CapNameOrInt()(n) for n in names]
    assert caps == cfg.CONF[GROUP].capabilities


def test_the_sample_helper_command_leaves_the_context_arguments_to_oslo_privsep() -> None:
    argv = shlex.split(sample()[GROUP]["helper_command"])
    assert argv[3] == "privsep-helper"
    assert "--privsep_context" not in argv and "--privsep_sock_path" not in argv
    # Only config files after privsep-helper, each under /etc.
    rest = argv[4:]
    assert rest[::2] == ["--config-file"] * (len(rest) // 2) and len(rest) % 2 == 0
    assert all(p.startswith("/etc/") for p in rest[1::2])



def test_the_user_guide_shows_the_shipped_filters_and_helper_command() -> None:
    guide = (ROOT / "docs" / "user-guide.md").read_text()
    shipped = [ln for ln in (FILTERS / "smartnic-vif.filters").read_text().splitlines()
               if ln.startswith("privsep-rootwrap-")]
    assert shipped and all(ln in guide.splitlines() for ln in shipped)
    assert f"helper_command = {sample()[GROUP]['helper_command']}" in guide.splitlines()
