"""Bad CLI input: a one-line message and a non-zero exit, nothing sent anywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vidpipe.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VIDPIPE_KAFKA_BOOTSTRAP", raising=False)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "nope"], "unknown service 'nope'"),
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
