"""The command line explains itself: every flag has a help line, fixed sets show their choices,
and the program name is whoever runs it (``python -m training`` or ``protonet``)."""

import argparse
from dataclasses import fields

import pytest

from training.cli import build_parser, error_message, main
from training.config import TrainConfig, help_text


def help_of(capsys, *argv: str, prog: str = "python -m training") -> str:
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"], prog=prog)
    assert exit_.value.code == 0
    return capsys.readouterr().out


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_every_config_field_has_a_help_line():
    for spec in fields(TrainConfig):
        assert help_text(spec.name).strip(), spec.name


def test_every_flag_of_every_command_has_help():
    for name, command in subcommands(build_parser()).items():
        assert command.description and command.epilog, name
        for action in command._actions:
            assert action.help and action.help.strip(), (name, action.dest)


def test_train_help_lists_the_choices_and_what_zero_means(capsys):
    text = " ".join(help_of(capsys, "train").split())  # unwrapped
    for choices in (
        "--split {lake,vinyals,folder,banking77,emoji}",
        "--schedule {step,cosine}",
        "--precision {auto,bf16,fp32}",
        "--device {auto,cpu,cuda}",
        "--channels {1,3}",
    ):
        assert choices in text
    assert "stop after this many minutes of wall time (0 = no limit)" in text
    assert "torch intra-op threads (0 = all cores)" in text
    assert "--overwrite" in text and "--resume" in text


def test_evaluate_has_no_progress_and_class_sets(capsys):
    text = help_of(capsys, "evaluate")
    assert "--progress, --no-progress" in text
    assert "--classes {heldout,all,training}" in text
    assert "--device {auto,cpu,cuda}" in text


@pytest.mark.parametrize("command", ["data", "train", "evaluate"])
def test_usage_and_examples_name_the_program_that_runs(capsys, command):
    text = help_of(capsys, command, prog="protonet")
    assert text.startswith(f"usage: protonet {command} ")
    assert f"\n  protonet {command} " in text  # the examples
    assert "python -m training" not in text


def test_top_level_help_describes_the_commands(capsys):
    text = help_of(capsys)
    assert text.startswith("usage: python -m training [-h] COMMAND")
    assert "meta-train an encoder" in text and "python -m training train --split folder" in text


def test_an_error_message_reads_without_the_quotes_of_a_key_error():
    assert error_message(KeyError("3 classes not in the data, e.g. ['x']")) == (
        "3 classes not in the data, e.g. ['x']"
    )
    assert error_message(ValueError("--way must be >= 0")) == "--way must be >= 0"
