"""The docs run as written: every ``bash`` and ``python`` block of the documents below is run,
in order, against a live ``python -m service`` on a free port, so a doc that stops working
fails CI.

A block that cannot run here (it serves forever, trains for an hour, needs a Docker engine) is
preceded by ``<!-- docs-test: skip: <reason> -->``; a skip without a reason is an error. The
blocks run from the repository root with the virtualenv's ``bin`` first on ``PATH`` (what
"activate the venv" gives) and ``localhost:8000`` pointed at the test's server. ``curl`` runs
with ``--fail-with-body``, so an HTTP error in any step fails the test with the server's
message instead of passing silently.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from protonet.checkpoint import load_checkpoint
from service.launcher import LocalServer, local_server
from tests.conftest import BUNDLED_MODEL, REPO_ROOT, ci

DOCUMENTS = ["README.md", "docs/service.md"]
RUNNABLE = {"bash", "python"}
FENCE = re.compile(r"^```(\w*)\s*$")
DIRECTIVE = re.compile(r"^<!-- docs-test: skip: (?P<reason>\S.*?) -->$")
DEFAULT_ADDRESS = re.compile(r"(?:localhost|127\.0\.0\.1):8000")


@dataclass(frozen=True)
class Block:
    document: str
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    skip_reason: str | None

    def __str__(self) -> str:
        return f"{self.document}:{self.line}"


def blocks_of(document: str) -> list[Block]:
    """Every fenced block of ``document`` with its language and skip directive, if any."""
    lines = (REPO_ROOT / document).read_text().splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        directive = DIRECTIVE.match(lines[index - 1]) if index else None
        code = "\n".join(lines[index + 1 : end]) + "\n"
        found.append(
            Block(document, index + 1, opening.group(1), code, directive and directive["reason"])
        )
        index = end + 1
    return found


def require_tool(name: str) -> None:
    if shutil.which(name) is None:
        message = f"{name} is not installed (the docs use it)"
        if ci():
            pytest.fail(f"{message}; CI=true: it must be")
        pytest.skip(message)


@pytest.fixture(scope="module")
def curl_that_fails(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory whose ``curl`` is the real one with ``--fail-with-body`` added."""
    require_tool("curl")
    directory = tmp_path_factory.mktemp("bin")
    shim = directory / "curl"
    shim.write_text(f'#!/bin/sh\nexec {shutil.which("curl")} --fail-with-body "$@"\n')
    shim.chmod(0o755)
    return directory


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    data_dir = tmp_path_factory.mktemp("docs-data")
    # What `make run` serves (Makefile's MODELS): the Omniglot model, the default, the text
    # model `intents` and the picture model, so the docs' examples run as written.
    bundled = REPO_ROOT / "models"
    models = f"omniglot={BUNDLED_MODEL},intents={bundled / 'banking77-minilm.pt'}"
    models += f",pictures={bundled / 'pictures-mobilenetv2.pt'}"
    env = {"PROTONET_DATA_DIR": str(data_dir), "PROTONET_MODELS": models, "HF_HUB_OFFLINE": "1"}
    with local_server(env) as running:
        yield running


def run_block(block: Block, server: LocalServer, curl_dir: Path) -> subprocess.CompletedProcess:
    code = DEFAULT_ADDRESS.sub(server.url.removeprefix("http://"), block.code)
    path = os.pathsep.join([str(curl_dir), str(Path(sys.executable).parent), os.environ["PATH"]])
    command = ["bash", "-e", "-o", "pipefail", "-c", code]
    if block.language == "python":
        command = [sys.executable, "-c", code]
    return subprocess.run(
        command,
        cwd=REPO_ROOT,
        env={**os.environ, "PATH": path, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_block_of_the_docs_runs(
    document: str, server: LocalServer, curl_that_fails: Path
) -> None:
    """Each block runs, and every JSON answer it shows in a comment has the keys of the real
    answer, at every depth (values differ from run to run; keys are the API)."""
    require_tool("jq")
    runnable = [b for b in blocks_of(document) if b.language in RUNNABLE and not b.skip_reason]
    assert runnable, f"{document} has no runnable block"
    for block in runnable:
        result = run_block(block, server, curl_that_fails)
        assert result.returncode == 0, (
            f"{block} failed (exit {result.returncode}):\n{block.code}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
        assert_shown_answers_match(block, result.stdout)


# A shown answer: a comment that starts with "# {" (on its own line or after a command), and
# the comment lines after it indented by two or more spaces ("#   ...") that continue it.
SHOWN_START = re.compile(r"(?:^|\s)# (\{.*)$")
SHOWN_CONTINUATION = re.compile(r"^#  +(\S.*)$")
# "..." in a shown answer: keys, items or a value left out.
ELIDED = "..."


def shown_answers(code: str) -> list[str]:
    """The JSON answers a block shows in its comments, as written (with their "...")."""
    shown: list[list[str]] = []
    continuing = False
    for line in code.splitlines():
        start = SHOWN_START.search(line)
        more = SHOWN_CONTINUATION.match(line.strip())
        if more and continuing:
            shown[-1].append(more.group(1))
        elif start:
            shown.append([start.group(1)])
        continuing = bool(start or (more and continuing))
    return ["".join(parts) for parts in shown]


def parse_shown(text: str) -> Any:
    """A shown answer as JSON, each ``...`` made explicit: ``"...": null`` among an object's
    keys (it has more), ``"..."`` as an array item (more items) or as a value (any value)."""
    out: list[str] = []
    open_brackets: list[str] = []
    in_string = escaped = False
    previous = ""
    index = 0
    while index < len(text):
        char = text[index]
        if in_string:
            in_string = escaped or char != '"'
            escaped = not escaped and char == "\\"
        elif text.startswith(ELIDED, index):
            as_key = previous != ":" and open_brackets[-1:] == ["{"]
            out.append(f'"{ELIDED}": null' if as_key else f'"{ELIDED}"')
            index += len(ELIDED)
            previous = '"'
            continue
        elif char == '"':
            in_string = True
        elif char in "{[":
            open_brackets.append(char)
        elif char in "}]":
            open_brackets.pop()
        if not char.isspace():
            previous = char
        out.append(char)
        index += 1
    return json.loads("".join(out))


def key_differences(shown: Any, real: Any, where: str = "") -> list[str]:
    """Where ``shown`` and ``real`` differ in keys or in shape (object, array, scalar)."""
    if shown == ELIDED:
        return []
    kinds = (dict, list)
    if [isinstance(shown, k) for k in kinds] != [isinstance(real, k) for k in kinds]:
        return [f"{where or 'the answer'}: shown {json.dumps(shown)}, answered {json.dumps(real)}"]
    if isinstance(shown, list):  # the items shown, against the answer's first ones
        items = [(f"{where}[{i}]", s, r) for i, (s, r) in enumerate(zip(shown, real, strict=False))]
        return [d for w, s, r in items for d in key_differences(s, r, w)]
    if not isinstance(shown, dict):
        return []
    keys = set(shown) - {ELIDED}
    differences = [f"{where}.{key}: shown, not answered" for key in sorted(keys - set(real))]
    if ELIDED not in shown:
        unshown = sorted(set(real) - keys)
        differences += [f"{where}.{key}: answered, not shown" for key in unshown]
    for key in sorted(keys & set(real)):
        differences += key_differences(shown[key], real[key], f"{where}.{key}")
    return differences


def json_values(stdout: str) -> list[Any]:
    """Every JSON object a block printed, in order (curl's answers run together)."""
    decoder = json.JSONDecoder()
    values, index = [], 0
    while (index := stdout.find("{", index)) != -1:
        try:
            value, index = decoder.raw_decode(stdout, index)
        except json.JSONDecodeError:
            index += 1
            continue
        values.append(value)
    return values


def assert_shown_answers_match(block: Block, stdout: str) -> None:
    """Each shown answer matches a real one, in order: same keys where it shows them all."""
    real = json_values(stdout)
    position = 0
    for text in shown_answers(block.code):
        try:
            shown = parse_shown(text)
        except (json.JSONDecodeError, IndexError) as error:
            raise AssertionError(
                f"{block}: the shown answer is not JSON ({error}): {text}"
            ) from None
        found = [(key_differences(shown, r), i) for i, r in enumerate(real) if i >= position]
        matching = [i for differences, i in found if not differences]
        closest = min((d for d, _ in found), key=len, default=["no answer left"])
        assert matching, (
            f"{block}: the shown answer {text}\ndiffers from every later answer; the closest "
            f"differs in: {closest}\nstdout:\n{stdout}"
        )
        position = matching[0] + 1


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_block_is_runnable_or_says_why_not(document: str) -> None:
    for block in blocks_of(document):
        assert block.language, f"{block}: a fenced block names its language"
        if block.language not in RUNNABLE:
            continue
        directive_line = (REPO_ROOT / document).read_text().splitlines()[block.line - 2]
        if "docs-test" in directive_line:
            assert block.skip_reason, f"{block}: write the reason: <!-- docs-test: skip: why -->"


def test_the_model_version_the_docs_show_is_the_bundled_models() -> None:
    version = load_checkpoint(BUNDLED_MODEL).version
    for document in [
        "README.md",
        *sorted(str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "docs").glob("*.md")),
    ]:
        shown = set(
            re.findall(r'"model_version":\s*"([0-9a-f]{16})"', (REPO_ROOT / document).read_text())
        )
        assert shown <= {version}, (
            f"{document} shows model versions {shown}, the bundled model is {version}"
        )


# What a client application must not need: the server's and the trainer's dependencies.
SERVER_ONLY = ["torch", "fastapi", "starlette", "sqlalchemy", "uvicorn", "faiss", "PIL", "tqdm"]
BLOCK_SERVER_ONLY = f"""
import importlib.abc, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {SERVER_ONLY!r}:
            raise ImportError(f"{{name}} is not installed here (a client-only Python)")
sys.meta_path.insert(0, Refuse())
"""


def test_the_python_client_snippet_runs_without_the_server_dependencies(
    server: LocalServer, curl_that_fails: Path
) -> None:
    """docs/service.md's client snippet, in a Python where importing torch, FastAPI,
    SQLAlchemy, Pillow or any other server or trainer dependency fails."""
    # The quickstart's snippet: the first Python block (later ones build on earlier state).
    snippet = next(b for b in blocks_of("docs/service.md") if b.language == "python")
    client_only = Block(
        snippet.document, snippet.line, "python", BLOCK_SERVER_ONLY + snippet.code, None
    )
    result = run_block(client_only, server, curl_that_fails)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["fork", "1.0"]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_shown_answer_is_json_with_its_elisions(document: str) -> None:
    for block in blocks_of(document):
        for text in shown_answers(block.code):
            assert isinstance(parse_shown(text), dict), f"{block}: {text}"


def test_shown_answers_are_compared_by_their_keys_at_every_depth() -> None:
    real = {"name": "a", "rejection": {"mode": "none"}, "classes": [{"label": "x", "n": 1}]}
    assert not key_differences(parse_shown('{"name":"b","rejection":{...},"classes":[...]}'), real)
    assert key_differences(parse_shown('{"name":"b","classes":[...]}'), real) == [
        ".rejection: answered, not shown"
    ]
    assert not key_differences(parse_shown('{"name":"b",...,"classes":[{"label":"y",...}]}'), real)
    assert key_differences(parse_shown('{"name":"b",...,"classes":[{"label":"y"}]}'), real) == [
        ".classes[0].n: answered, not shown"
    ]
    assert key_differences(parse_shown('{"name":"b","text":null,...}'), real) == [
        ".text: shown, not answered"
    ]
    assert key_differences(parse_shown('{"rejection":null,...}'), real) == [
        '.rejection: shown null, answered {"mode": "none"}'
    ]
    code = 'curl -s x   # {"a":1,\n#  "b":[...]}\n# {"c":2}\n# not json\n'
    assert shown_answers(code) == ['{"a":1,"b":[...]}', '{"c":2}']
