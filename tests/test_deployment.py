"""The deployment files: docker-compose.yml and the Dockerfile run real engineroom commands, wired to each other."""

from __future__ import annotations

import fnmatch
import json
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from engineroom.cli import build_parser
from engineroom.core.config import ENGINES, Settings

ROOT = Path(__file__).resolve().parents[1]
WORKER_SERVICES = ("worker-media", "worker-text")
ENGINEROOM_SERVICES = ("api", *WORKER_SERVICES, "scheduler")
ALL_SERVICES = ("mongo", "rabbitmq", *ENGINEROOM_SERVICES)


def _compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return document


def _service(name: str) -> dict[str, Any]:
    service: dict[str, Any] = _compose()["services"][name]
    return service


def _environment(name: str) -> dict[str, str]:
    environment = _service(name)["environment"]
    if isinstance(environment, list):  # the `KEY=value` list form
        return dict(entry.split("=", 1) for entry in environment)
    return {key: str(value) for key, value in environment.items()}


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw_line in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def _final_stage() -> list[tuple[str, str]]:
    instructions = _dockerfile_instructions()
    last_from = max(index for index, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def test_compose_defines_mongo_rabbitmq_api_and_worker() -> None:
    assert set(ALL_SERVICES) <= set(_compose()["services"])


def test_rabbitmq_runs_an_image_with_the_management_plugin() -> None:
    image: str = _service("rabbitmq")["image"]

    assert image.startswith("rabbitmq:")
    assert "management" in image.partition(":")[2]


@pytest.mark.parametrize("name", ENGINEROOM_SERVICES)
def test_engineroom_services_are_built_from_the_repository_dockerfile(name: str) -> None:
    build = _service(name)["build"]
    context, dockerfile = (build, "Dockerfile") if isinstance(build, str) else (build["context"], build["dockerfile"])

    assert (ROOT / context).resolve() == ROOT
    assert (ROOT / context / dockerfile).is_file()


@pytest.mark.parametrize("name", ENGINEROOM_SERVICES)
def test_engineroom_services_start_only_once_mongo_and_rabbitmq_are_healthy(name: str) -> None:
    depends_on = _service(name)["depends_on"]

    assert isinstance(depends_on, dict), "the list form cannot wait for health"
    for dependency in ("mongo", "rabbitmq"):
        assert depends_on[dependency]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", ALL_SERVICES)
def test_every_service_has_a_healthcheck(name: str) -> None:
    healthcheck = _service(name).get("healthcheck")

    assert healthcheck, f"{name} has no healthcheck"
    assert not healthcheck.get("disable", False)
    test = healthcheck["test"]
    assert test and test != ["NONE"], f"{name}'s healthcheck tests nothing"


@pytest.mark.parametrize("name", ENGINEROOM_SERVICES)
def test_engineroom_services_reach_mongo_and_rabbitmq_by_service_name(name: str) -> None:
    environment = _environment(name)
    mongodb_url = urlsplit(environment["ENGINEROOM_MONGODB_URL"])
    amqp_url = urlsplit(environment["ENGINEROOM_AMQP_URL"])

    assert (mongodb_url.scheme, mongodb_url.hostname, mongodb_url.port or 27017) == ("mongodb", "mongo", 27017)
    assert (amqp_url.scheme, amqp_url.hostname, amqp_url.port or 5672) == ("amqp", "rabbitmq", 5672)


@pytest.mark.parametrize("name", ENGINEROOM_SERVICES)
def test_engineroom_services_run_in_production_mode_with_a_secret_the_operator_must_set(name: str) -> None:
    environment = _environment(name)

    assert environment["ENGINEROOM_ENV"] == "prod"
    assert environment["ENGINEROOM_JWT_SECRET"].startswith("${ENGINEROOM_JWT_SECRET:?")


def test_every_engineroom_service_shares_one_environment() -> None:
    first, *others = (_environment(name) for name in ENGINEROOM_SERVICES)
    assert all(environment == first for environment in others)


def test_every_environment_variable_names_a_setting() -> None:
    settings = {f"ENGINEROOM_{name.upper()}" for name in Settings.model_fields}
    assert set(_environment("api")) <= settings, set(_environment("api")) - settings


def test_two_gateways_and_workers_split_by_engine_group_cover_every_engine_and_the_deliveries() -> None:
    assert _service("api")["deploy"]["replicas"] == 2
    published = _service("api")["ports"]
    assert published == ["8000-8001:8000"]  # one host port per replica
    covered: list[str] = []
    deliveries = 0
    for name in WORKER_SERVICES:
        args = build_parser().parse_args(_service(name)["command"])
        covered += args.engines.split(",")
        deliveries += args.notifications
    assert sorted(covered) == sorted(ENGINES)  # each engine in exactly one group
    assert deliveries == 1


@pytest.mark.parametrize("name", ENGINEROOM_SERVICES)
def test_compose_commands_are_real_engineroom_subcommands(name: str) -> None:
    command = _service(name)["command"]
    argv = command.split() if isinstance(command, str) else [str(part) for part in command]

    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"`engineroom {' '.join(argv)}` is not a valid engineroom command")

    assert args.command == name.split("-")[0]


def test_api_listens_on_the_port_compose_publishes() -> None:
    args = build_parser().parse_args(_service("api")["command"])
    published = {str(mapping).rsplit(":", 1)[-1] for mapping in _service("api")["ports"]}

    assert args.host == "0.0.0.0"
    assert str(args.port) in published


def test_dockerfile_final_stage_runs_as_a_non_root_user() -> None:
    users = [arguments for keyword, arguments in _final_stage() if keyword == "USER"]

    assert users, "the final stage has no USER, so it runs as root"
    user = users[-1].partition(":")[0]
    assert user not in ("root", "0")


def test_dockerfile_final_stage_installs_without_build_tools() -> None:
    runs = " ".join(arguments for keyword, arguments in _final_stage() if keyword == "RUN")

    assert "pip install --no-index" in runs
    for build_tool in ("gcc", "build-essential", "apt-get install"):
        assert build_tool not in runs


def test_dockerfile_entrypoint_is_engineroom() -> None:
    entrypoints = [arguments for keyword, arguments in _final_stage() if keyword == "ENTRYPOINT"]

    assert entrypoints and json.loads(entrypoints[-1]) == ["engineroom"]


def test_dockerfile_default_command_is_a_real_engineroom_subcommand() -> None:
    commands = [arguments for keyword, arguments in _final_stage() if keyword == "CMD"]

    assert commands
    args = build_parser().parse_args(json.loads(commands[-1]))
    assert (args.command, args.host) == ("api", "0.0.0.0")


def test_dockerfile_healthcheck_probes_healthz_on_the_default_port() -> None:
    healthchecks = [arguments for keyword, arguments in _final_stage() if keyword == "HEALTHCHECK"]
    default_port = build_parser().parse_args(json.loads(dict(_final_stage())["CMD"])).port

    assert healthchecks
    assert f"127.0.0.1:{default_port}/healthz" in healthchecks[-1]


def test_dockerignore_keeps_every_installed_package_in_the_build_context() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    package_dirs = {
        package.removeprefix("engineroom").lstrip(".").replace(".", "/") or "." for package in setuptools["packages"]
    }
    needed = package_dirs | {"pyproject.toml", "README.md", "__init__.py", "cli.py"}

    for path in needed:
        assert not any(fnmatch.fnmatch(path, pattern) for pattern in patterns), f"{path} is left out of the image"
    for left_out in ("tests", "bench", ".git", ".engineroom"):
        assert left_out in patterns
