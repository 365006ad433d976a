"""Command-line parsing that needs no host: global options in any position,
usage errors exit 2."""

from __future__ import annotations

import pytest

from smartnic_vif.cli.main import build_parser, hoist_global_options, main


@pytest.mark.parametrize(
    "argv",
    [
        ["--config-file", "a.conf", "inventory", "--json"],
        ["inventory", "--config-file", "a.conf", "--json"],
        ["inventory", "--json", "--config-file=a.conf"],
    ],
)
def test_config_file_is_accepted_before_or_after_the_subcommand(argv: list[str]) -> None:
    args = build_parser().parse_args(hoist_global_options(argv))
    assert args.command == "inventory"
    assert args.json is True
    assert args.config_file == ["a.conf"]


def test_sysfs_root_after_the_subcommand() -> None:
    args = build_parser().parse_args(
        hoist_global_options(["pci-spec", "--sysfs-root", "/tmp/x", "--json"])
    )
    assert args.sysfs_root == "/tmp/x" and args.command == "pci-spec"


def test_missing_config_file_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inventory", "--config-file", "/nonexistent/smartnic-vif.conf"]) == 2
    err = capsys.readouterr().err
    assert "--config-file /nonexistent/smartnic-vif.conf" in err


def test_unknown_subcommand_exits_2() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2


def test_every_command_is_in_command_modules_and_registered_by_its_module() -> None:
    """The lazy dispatch imports only COMMAND_MODULES[command]: each command
    must be listed there, under the module that registers it."""
    import argparse

    from smartnic_vif.cli.main import COMMAND_MODULES, command_of

    def commands(parser: argparse.ArgumentParser) -> set[str]:
        [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        return set(sub.choices)

    assert commands(build_parser()) == set(COMMAND_MODULES)
    for command, module in COMMAND_MODULES.items():
        assert command in commands(build_parser(command))
        assert {c for c, m in COMMAND_MODULES.items() if m == module} == commands(
            build_parser(command))
    assert command_of(["--config-file", "a.conf", "-v", "status", "--json"]) == "status"
    assert command_of(["--config-file=a.conf", "--sysfs-root", "/x", "doctor"]) == "doctor"
    assert command_of(["--help"]) is None

