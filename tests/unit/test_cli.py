"""The ``engineroom`` command's own behaviour (its subcommands run for real in tests/e2e)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from engineroom.cli import build_parser
from engineroom.services.tokens import decode_token
from tests.settings import make_settings


def test_token_prints_a_jwt_signed_with_the_configured_secret(jwt_secret: str) -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "engineroom.cli", "token", "--user", "ops", "--tenant", "acme", "--admin"],
        env={"ENGINEROOM_JWT_SECRET": jwt_secret, "PATH": ""},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    who = decode_token(make_settings(jwt_secret=jwt_secret), printed)
    assert (who.user_id, who.tenant_id, who.is_admin) == ("ops", "acme", True)


def test_worker_refuses_unknown_engines() -> None:
    args = build_parser().parse_args(["worker", "--engines", "general,warp_drive"])
    with pytest.raises(SystemExit, match="warp_drive"):
        args.run(args)


def test_every_subcommand_of_the_design_exists() -> None:
    parser = build_parser()
    for argv in (["api"], ["worker"], ["token", "--user", "u", "--tenant", "t"], ["dev"]):
        assert parser.parse_args(argv).command == argv[0]


@pytest.mark.parametrize("value", ["3", "0:2", "3:2", "a:b"])
def test_worker_refuses_an_autoscale_range_that_is_not_min_to_max(value: str) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["worker", "--autoscale", value])


def test_autoscale_takes_the_place_of_processes() -> None:
    args = build_parser().parse_args(["worker", "--autoscale", "1:3"])
    assert args.autoscale == (1, 3) and args.processes is None
    both = build_parser().parse_args(["worker", "--autoscale", "1:3", "--processes", "2"])
    with pytest.raises(SystemExit, match="drop --processes"):
        both.run(both)


def test_reconcile_takes_engines_and_a_dry_run_and_refuses_unknown_engines() -> None:
    args = build_parser().parse_args(["reconcile", "--engine", "general", "--engine", "video_pipeline", "--dry-run"])
    assert (args.engine, args.dry_run) == (["general", "video_pipeline"], True)
    unknown = build_parser().parse_args(["reconcile", "--engine", "warp_drive"])
    with pytest.raises(SystemExit, match="warp_drive"):
        unknown.run(unknown)
