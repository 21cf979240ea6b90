"""Run ``python -m training evaluate ... --json`` in-process and return its JSON summary."""

import json

from training.cli import main


def evaluate_json(capsys, *args: str) -> dict:
    """The summary object the evaluate command prints last; asserts the command succeeded."""
    capsys.readouterr()  # drop earlier output, so the last line is this command's
    assert main(["evaluate", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])
