"""The ``protonet`` command dispatches to the trainer and the service under its own name."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from protonet_cli import main
from service.settings import BUNDLED_CHECKPOINT, MAIN_SETTINGS, Settings, shown, variable_of
from tests.conftest import REPO_ROOT


def help_of(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_the_script_is_declared() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["protonet"] == "protonet_cli:main"


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    listing = capsys.readouterr().out
    for command in ("train", "evaluate", "calibrate", "data", "serve", "migrate", "embeddings"):
        assert f"  {command} " in listing


@pytest.mark.parametrize("command", ["train", "evaluate", "calibrate", "data", "serve", "migrate"])
def test_each_command_shows_its_help_under_the_protonet_name(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    assert help_of(capsys, command).startswith(f"usage: protonet {command}")


def test_an_unknown_command_is_refused_with_the_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tarin"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown command 'tarin'\n")


def test_calibrating_a_text_checkpoint_on_other_data_is_one_error_line(tmp_path: Path) -> None:
    """A text checkpoint is calibrated on its validation intents, read from Banking77: any
    other --data is refused as ``error: <message>`` and exit 2, not a traceback."""
    protonet = Path(sys.executable).parent / "protonet"
    text_model = "models/banking77-minilm.pt"
    result = subprocess.run(
        [protonet, "calibrate", "--checkpoint", text_model, "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    assert (result.returncode, result.stderr) == (
        2,
        f"error: {tmp_path} is not Banking77: it needs train.csv, test.csv, categories.json\n",
    )


def test_the_installed_script_runs() -> None:
    """``make install`` put ``protonet`` beside the virtualenv's python."""
    script = Path(sys.executable).parent / "protonet"
    if not script.exists():
        script = Path(shutil.which("protonet") or script)
    assert script.exists(), "the protonet script is not installed: run make install"
    result = subprocess.run([script, "evaluate", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--no-progress" in result.stdout


def test_serve_help_says_what_it_serves_and_the_main_settings_with_their_defaults(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = help_of(capsys, "serve")
    default = Settings.model_construct()
    for name in MAIN_SETTINGS:  # read from the settings class: the help cannot drift from it
        assert f"  {variable_of(name)}={shown(getattr(default, name))}\n" in text
    flowing = " ".join(text.split())
    assert f"serves the bundled model {BUNDLED_CHECKPOINT} (as model 'default')" in flowing
    assert "on http://127.0.0.1:8000" in flowing
    assert Settings.model_fields["port"].description in flowing
    assert "docs/service.md" in flowing


@pytest.mark.parametrize("command", ["serve", "migrate", "embeddings"])
def test_invalid_settings_are_one_line_without_a_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.setenv("PROTONET_MODELS", "runs/mine/best.pt")
    assert main([command]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: PROTONET_MODELS: model entry 'runs/mine/best.pt' is not")
    assert error.count("\n") == 1


def test_an_unreadable_api_key_file_is_refused_like_a_setting(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PROTONET_AUTH_ENABLED", "true")
    monkeypatch.setenv("PROTONET_API_KEYS_FILE", str(tmp_path / "keys.txt"))
    assert main(["serve"]) == 2
    assert capsys.readouterr().err == (
        f"error: PROTONET_API_KEYS_FILE {tmp_path / 'keys.txt'}: No such file or directory\n"
    )


def test_an_unknown_log_level_is_a_setting_error_not_a_logging_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROTONET_LOG_LEVEL", "loud")
    assert main(["serve"]) == 2
    assert capsys.readouterr().err == (
        "error: PROTONET_LOG_LEVEL: log level 'loud' is not one of critical, error, warning, "
        "info, debug, trace\n"
    )
