"""The CLI without servers: bad input gets one line and a non-zero exit, nothing is sent; the
stage choices come from the registry; the broker address follows one rule; the dev commands are
mounted by the program, never by the production app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.registry import REGISTRY, STAGES
from vidpipe.__main__ import program
from vidpipe.bus.address import DEV_STACK_STATE_FILE, RECORDED_BROKER_KEY, broker_address
from vidpipe.cli import app
from vidpipe.errors import ConfigurationError
from vidpipe.settings import Settings

runner = CliRunner()
DEV_COMMANDS = ("up", "down", "wipe", "demo", "emulator")


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VIDPIPE_KAFKA_BOOTSTRAP", raising=False)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["submit", ""], "invalid request: prompt"),
        (["submit", "a fox", "--size", "huge"], "invalid request: size"),
        (["submit", "a fox", "--image-url", "http://x.example/a.png"], "input_image_url"),
        (["submit", "a fox"], "no broker"),
        (["status", "missing-id"], "no record of request 'missing-id'"),
    ],
)
def test_bad_input_gets_one_line_and_non_zero_exit(args: list[str], needle: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code != 0
    message = result.stderr.strip()
    assert needle in message
    assert len(message.splitlines()) == 1, message


def test_bad_setting_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDPIPE_DATABASE_URL", "mysql://nope")
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 2
    assert "VIDPIPE_DATABASE_URL" in result.stderr


def test_status_json_on_an_empty_database() -> None:
    result = runner.invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_a_batch_with_one_bad_line_sends_nothing(tmp_path: Path) -> None:
    batch = tmp_path / "requests.ndjson"
    batch.write_text(
        '{"request_id": "a", "prompt": "a fox"}\n\n{"request_id": "b", "prompt": ""}\nnot json\n'
    )
    result = runner.invoke(app, ["submit", "--file", str(batch)])
    assert result.exit_code == 2
    assert "line 3: prompt" in result.stderr
    assert "line 4: not JSON" in result.stderr
    assert "nothing was sent" in result.stderr


def test_prompt_and_file_are_exclusive(tmp_path: Path) -> None:
    result = runner.invoke(app, ["submit", "x", "--file", str(tmp_path / "f")])
    assert result.exit_code == 2
    assert "either a PROMPT or --file" in result.stderr


def test_run_refuses_a_stage_the_registry_does_not_know() -> None:
    result = runner.invoke(app, ["run", "nope"], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "'nope' is not one of" in result.stderr
    for stage in STAGES:
        assert f"'{stage}'" in result.stderr


def test_run_help_lists_every_registered_stage() -> None:
    result = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for registered in REGISTRY:
        assert registered.name in result.stdout
        assert registered.summary in result.stdout


def test_the_production_app_has_no_dev_commands_and_the_program_adds_them() -> None:
    production = runner.invoke(app, ["--help"], env={"COLUMNS": "200"}).stdout
    full = runner.invoke(program(), ["--help"], env={"COLUMNS": "200"}).stdout
    for command in ("run", "topics", "submit", "status", "replay", "dlq"):
        assert f" {command} " in production and f" {command} " in full
    for command in DEV_COMMANDS:
        assert f" {command} " not in production
        assert f" {command} " in full
    assert runner.invoke(app, ["up"]).exit_code == 2  # no such command


def test_the_emulator_needs_its_key() -> None:
    result = runner.invoke(program(), ["emulator"], env={"VIDPIPE_EMULATOR_API_KEY": ""})
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: set VIDPIPE_EMULATOR_API_KEY: the emulator checks keys like the real APIs"
    )


# --- the broker address: the setting, else the dev stack's record, else an error ---------------


def _record(state_dir: Path, content: str) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / DEV_STACK_STATE_FILE).write_text(content)


def test_the_setting_wins_over_a_running_dev_stack(tmp_path: Path) -> None:
    _record(tmp_path, json.dumps({RECORDED_BROKER_KEY: "127.0.0.1:1111"}))
    settings = Settings(kafka_bootstrap="kafka:9092", state_dir=tmp_path)
    assert broker_address(settings) == "kafka:9092"


def test_without_the_setting_the_dev_stack_s_broker(tmp_path: Path) -> None:
    _record(tmp_path, json.dumps({RECORDED_BROKER_KEY: "127.0.0.1:1111", "owner_pid": 1}))
    assert broker_address(Settings(state_dir=tmp_path)) == "127.0.0.1:1111"


@pytest.mark.parametrize("content", [None, "{not json", "[]", json.dumps({"emulator_url": "x"})])
def test_no_broker_says_what_to_do(tmp_path: Path, content: str | None) -> None:
    if content is not None:
        _record(tmp_path, content)
    with pytest.raises(ConfigurationError, match="set VIDPIPE_KAFKA_BOOTSTRAP or start one"):
        broker_address(Settings(state_dir=tmp_path))


def test_a_command_finds_the_dev_stack_s_broker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`vidpipe topics ensure` reaches the broker `vidpipe up` recorded (nothing listens there)."""
    _record(tmp_path / ".vidpipe", json.dumps({RECORDED_BROKER_KEY: "127.0.0.1:9"}))
    seen: list[str] = []

    async def ensure_all_topics(_settings: Settings, bootstrap_servers: str) -> dict[str, str]:
        seen.append(bootstrap_servers)
        return {}

    monkeypatch.setattr("vidpipe.bus.admin.ensure_all_topics", ensure_all_topics)
    result = runner.invoke(app, ["topics", "ensure"])
    assert result.exit_code == 0, result.stderr
    assert seen == ["127.0.0.1:9"]
