"""A newcomer's first steps: the README's commands say what they do, and failures are one line.

The commands CI runs word for word (``.ci/run``: start, test, test-postgres, migrate) are
checked here for what can go wrong before running them: programs that exist, arguments the
command line accepts, variables set on the command that reads them.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from flyswatter import migrations
from flyswatter.app import create_app
from flyswatter.cli import build_parser
from flyswatter.config import Settings
from flyswatter.dev.demo import quickstart, seed_demo_project
from flyswatter.dev.identity_provider import DevIdentityProvider
from flyswatter.dev.realm import REALM_FILE, load_realm
from flyswatter.errors import Problem
from tests.support import readme
from tests.support.api import Api
from tests.support.identity import JwksServer
from tests.support.servers import FLYSWATTER, free_port, serve_environment

# Programs the README runs from the virtualenv, and what reads FLYSWATTER_* among them.
READS_SETTINGS = {".venv/bin/flyswatter", ".venv/bin/pytest", ".venv/bin/alembic"}


def readme_commands() -> list[readme.SimpleCommand]:
    commands = []
    for block in readme.blocks():
        if block.language != "sh":
            continue
        for line in readme.shell_lines(block.text):
            if "$(" not in line:
                commands.extend(readme.simple_commands(line))
    return commands


def test_ci_runs_the_readme_blocks_it_names() -> None:
    names = {block.name for block in readme.blocks() if block.name}
    assert {"start", "test", "test-postgres", "migrate", "quickstart"} <= names
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    for name in ("start", "test-postgres", "migrate"):
        assert f"readme_command {name}" in ci, name
    assert (
        "python3 -m tests.support.readme test"
        in (Path(__file__).resolve().parent.parent / ".ci" / "bare-machine").read_text()
    )


def test_variables_in_front_of_a_command_are_read_by_that_command() -> None:
    """``X=1 a && b`` sets X for ``a`` only: a setting in front of ``python3 -m venv`` never
    reaches the tests it was meant for."""
    for command in readme_commands():
        for name in command.environment:
            if name.startswith("FLYSWATTER_"):
                assert command.program in READS_SETTINGS, f"{name} is set for {command.argv}"


def test_every_program_the_readme_runs_from_the_virtualenv_is_installed() -> None:
    for command in readme_commands():
        if not command.program.startswith(".venv/bin/"):
            continue
        installed = Path(sys.executable).with_name(command.program.removeprefix(".venv/bin/"))
        assert installed.exists(), command.argv
        if command.argv[1:2] == ["-m"]:
            assert importlib.util.find_spec(command.argv[2]), command.argv


def test_every_flyswatter_command_in_the_readme_is_accepted() -> None:
    parser = build_parser()
    seen = 0
    for command in readme_commands():
        if command.program == ".venv/bin/flyswatter":
            parser.parse_args(command.argv[1:])
            seen += 1
    assert seen >= 2


def test_the_readme_shows_the_commands_flyswatter_dev_prints() -> None:
    provider = DevIdentityProvider(load_realm(REALM_FILE, {}), "http://127.0.0.1:8081")
    printed = [line for line in quickstart("http://127.0.0.1:8000", provider).splitlines() if line]
    shown = readme.shell_lines(readme.named("quickstart"))
    commands = [" ".join(line.split()) for line in printed if not line.startswith("#")]
    assert [" ".join(line.split()) for line in shown] == commands[: len(shown)]
    assert all("-sf" not in line for line in printed)


# --- --help ------------------------------------------------------------------------------


def _parsers() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every command's parser, the top one first, with the words that reach it."""
    pending = [("flyswatter", build_parser())]
    while pending:
        words, parser = pending.pop(0)
        yield words, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                pending += [(f"{words} {name}", sub) for name, sub in action.choices.items()]


def test_help_describes_every_command_and_option_in_plain_text() -> None:
    pages = dict(_parsers())
    assert {"flyswatter worker", "flyswatter migrate upgrade", "flyswatter dev"} <= set(pages)
    for words, parser in pages.items():
        assert "``" not in parser.format_help(), words
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                described = {choice.dest for choice in action._choices_actions if choice.help}
                assert described == set(action.choices), words
                continue
            assert action.help, f"{words}: {action.option_strings or action.dest} has no help"


def test_help_runs_from_the_installed_command() -> None:
    result = subprocess.run(
        [FLYSWATTER, "migrate", "--help"], capture_output=True, text=True, timeout=60, check=True
    )
    for action in ("upgrade", "downgrade", "current", "history", "check"):
        assert action in result.stdout


# --- one-line failures ---------------------------------------------------------------------


def run_flyswatter(
    *words: str, cwd: Path, timeout: float = 60, **settings: object
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FLYSWATTER, *words],
        env=serve_environment(**settings),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


def test_dev_on_a_taken_port_says_so_in_one_line_naming_the_flag(
    taken_port: int, tmp_path: Path
) -> None:
    result = run_flyswatter(
        "dev", "--port", str(taken_port), "--idp-port", str(free_port()), cwd=tmp_path
    )
    assert result.returncode != 0
    assert result.stdout == ""  # no banner, no commands to copy
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"127.0.0.1:{taken_port}" in result.stderr
    assert "--port" in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing migrated


def test_dev_with_the_identity_provider_port_taken_names_it_and_its_flag(
    taken_port: int, tmp_path: Path
) -> None:
    result = run_flyswatter(
        "dev", "--port", str(free_port()), "--idp-port", str(taken_port), cwd=tmp_path
    )
    assert result.returncode != 0
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"127.0.0.1:{taken_port}" in result.stderr
    assert "--idp-port" in result.stderr


def test_serve_on_a_taken_port_says_so_in_one_line(taken_port: int, tmp_path: Path) -> None:
    result = run_flyswatter(
        "serve",
        cwd=tmp_path,
        port=taken_port,
        keycloak_url="https://sso.example.org",
        # Set, so that what serve refuses is what the test is about.
        cursor_secret="a-test-secret",
    )
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"127.0.0.1:{taken_port}" in result.stderr
    assert "FLYSWATTER_PORT" in result.stderr


def test_serve_refuses_a_database_behind_the_migrations_in_one_line(tmp_path: Path) -> None:
    database = tmp_path / "flyswatter.db"
    settings = Settings(database_url=f"sqlite:///{database}")
    migrations.upgrade(settings)
    migrations.downgrade(settings, "-1")
    result = run_flyswatter(
        "serve",
        cwd=tmp_path,
        port=free_port(),
        database_url=settings.database_url,
        keycloak_url="https://sso.example.org",
        # Set, so that what serve refuses is what the test is about.
        cursor_secret="a-test-secret",
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "the migrations' head is" in result.stderr
    assert "flyswatter migrate upgrade" in result.stderr


def test_serve_refuses_a_database_it_cannot_reach_naming_host_and_port(tmp_path: Path) -> None:
    port = free_port()
    result = run_flyswatter(
        "serve",
        cwd=tmp_path,
        port=free_port(),
        database_url=f"postgresql://flyswatter:s3cret@127.0.0.1:{port}/flyswatter",
        keycloak_url="https://sso.example.org",
        # Set, so that what serve refuses is what the test is about.
        cursor_secret="a-test-secret",
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"127.0.0.1:{port}" in result.stderr
    assert "s3cret" not in result.stderr


def test_a_migrated_database_is_at_the_head(settings: Settings) -> None:
    migrations.require_head(settings)  # the suite's database, migrated by its fixtures


@pytest.mark.parametrize(
    ("setting", "value", "says"),
    [
        ("database_url", "postgresql://flyswatter:s3cret@db:notaport/flyswatter", "postgresql://"),
        ("database_url", "postgresql://flyswatter:p@ss@db/flyswatter", "percent-encoded"),
        ("database_url", "mysql://flyswatter:s3cret@db/flyswatter", "sqlite:// or postgresql://"),
        ("port", "eighty", "integer"),
        ("workers", "0", "greater than or equal to 1"),
        ("cors_origins", "https://app.example.org", "JSON"),
        ("keycloak_url", "sso.example.org", "http(s) URL"),
    ],
)
def test_a_malformed_setting_is_one_line_naming_the_variable_and_exit_2(
    setting: str, value: str, says: str, tmp_path: Path
) -> None:
    # serve here; dev and migrate read their settings through the same function (below).
    settings = {"keycloak_url": "https://sso.example.org", setting: value}
    result = run_flyswatter("serve", cwd=tmp_path, **settings)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"FLYSWATTER_{setting.upper()}" in result.stderr
    assert says in result.stderr
    assert "s3cret" not in result.stderr
    assert "p@ss" not in result.stderr


@pytest.mark.parametrize("command", ["dev", "migrate current"])
def test_dev_and_migrate_refuse_a_malformed_setting_the_same_way(
    command: str, tmp_path: Path
) -> None:
    result = run_flyswatter(*command.split(), cwd=tmp_path, port="eighty")
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "FLYSWATTER_PORT" in result.stderr


def test_dev_prints_its_banner_once_the_api_answers(tmp_path: Path) -> None:
    port, idp_port = free_port(), free_port()
    process = subprocess.Popen(
        [FLYSWATTER, "dev", "--port", str(port), "--idp-port", str(idp_port)],
        env=serve_environment(),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        # The moment the banner's first line is out, the URL it names answers.
        assert first.startswith(f"Flyswatter (dev) on http://127.0.0.1:{port}/docs"), first
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=30)


# --- what a log line says of an unreachable peer --------------------------------------------


async def test_an_unreachable_database_is_logged_with_host_and_port_never_the_password(
    base_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    settings = base_settings.model_copy(
        update={
            "database_url": f"postgresql://flyswatter:s3cret@127.0.0.1:{port}/flyswatter",
            "database_timeout_seconds": 2.0,
        }
    )
    app: FastAPI = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    with caplog.at_level(logging.WARNING):
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://t") as client,
        ):
            assert (await client.get("/readyz")).status_code == 503
    assert f"127.0.0.1:{port}" in caplog.text
    assert "s3cret" not in caplog.text


async def test_an_unreachable_keycloak_is_logged_with_host_and_port(
    base_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    down = JwksServer()
    down.start()
    down.stop()  # its port, with nothing behind it
    settings = base_settings.model_copy(update={"keycloak_url": down.base_url})
    app = create_app(settings)
    with caplog.at_level(logging.WARNING):
        async with app.router.lifespan_context(app):
            started = time.monotonic()
            assert not app.services.token_verifier.has_keys
            assert time.monotonic() - started < 30
    assert f"Keycloak at 127.0.0.1:{down.port}" in caplog.text


# --- one contract ---------------------------------------------------------------------------


async def test_a_missing_route_and_a_missing_project_are_the_same_problem(api: Api) -> None:
    alice = api.as_user("alice")
    no_route = await alice.get("/api/v1/nothing-here")
    no_project = await alice.get("/api/v1/projects/NOPE")
    assert no_route.status_code == no_project.status_code == 404
    for field in ("type", "title"):
        assert no_route.json()[field] == no_project.json()[field]
    assert no_project.json()["title"] == "Not found"


async def test_every_problem_title_is_spelled_in_sentence_case(client: httpx.AsyncClient) -> None:
    not_allowed = await client.request("PUT", "/healthz")
    assert not_allowed.status_code == 405
    assert not_allowed.json()["title"] == "Method not allowed"
    for problem in _problem_classes(Problem):
        assert problem.title == problem.title[:1] + problem.title[1:].lower(), problem


def _problem_classes(base: type[Problem]) -> list[type[Problem]]:
    found = []
    for subclass in base.__subclasses__():
        found += [subclass, *_problem_classes(subclass)]
    return found


# --- people by name -------------------------------------------------------------------------


async def test_members_are_added_by_username_as_well_as_by_id(api: Api) -> None:
    owner = api.as_user("owner")
    assert (await owner.post("/api/v1/projects", json={"key": "MINE", "name": "M"})).status_code
    alice_id = await api.as_user("alice").sign_in()
    added = await owner.put("/api/v1/projects/MINE/members/alice", json={"role": "developer"})
    assert added.status_code == 201, added.text
    assert added.json()["user_id"] == alice_id
    again = await owner.put(f"/api/v1/projects/MINE/members/{alice_id}", json={"role": "viewer"})
    assert again.status_code == 200
    assert (await owner.delete("/api/v1/projects/MINE/members/alice")).status_code == 204
    unknown = await owner.put("/api/v1/projects/MINE/members/nobody", json={"role": "viewer"})
    assert unknown.status_code == 404


async def test_demo_users_can_be_added_before_they_first_sign_in(
    api: Api, settings: Settings
) -> None:
    provider = DevIdentityProvider(load_realm(REALM_FILE, {}), "http://127.0.0.1:8081")
    await seed_demo_project(settings, provider.realm)
    admin = api.as_user("root", roles=["flyswatter-admin"])
    assert (await admin.post("/api/v1/projects", json={"key": "MINE", "name": "M"})).status_code
    added = await admin.put("/api/v1/projects/MINE/members/dev", json={"role": "developer"})
    assert added.status_code == 201, added.text
    assert added.json()["username"] == "dev"
