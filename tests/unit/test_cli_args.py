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
