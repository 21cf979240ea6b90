"""The unseen-domain validation set: OpenVoiceOS skill intents read from unpacked packages
(synthetic ones here: the real packages are downloaded by hand, see the README)."""

from pathlib import Path

import numpy as np
import pytest

from protonet.text import base_identity
from training.skill_intents import MAX_TEXTS, MIN_TEXTS, expand_template, load_skill_intents


def write_intent(root: Path, skill: str, name: str, lines: list[str], folder: str = "intents"):
    directory = root / f"{skill}-1.0" / skill / "locale" / "en-us" / folder
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.intent").write_text("\n".join(lines) + "\n")


def test_templates_expand_into_every_alternative():
    assert expand_template("(hi|hello) there") == ["hi there", "hello there"]
    assert expand_template("what (time|day) is it (now|)") == [
        "what time is it now",
        "what time is it",
        "what day is it now",
        "what day is it",
    ]
    assert expand_template("plain   words") == ["plain words"]


def test_intents_with_enough_sentences_become_classes_grouped_by_skill(tmp_path):
    numbers = [f"tell me fact {k} (please|now)" for k in range(MIN_TEXTS // 2)]
    write_intent(tmp_path, "skill_facts", "fact", numbers)  # 2 sentences per line
    write_intent(tmp_path, "skill_facts", "too_few", ["just (one|two)"])
    many = [f"weather number {k}" for k in range(MAX_TEXTS + 20)]
    write_intent(tmp_path, "skill_weather", "forecast", [*many, "weather in {city}", "# a note"])
    write_intent(tmp_path, "skill_weather", "forecast", ["weather number 0"], folder="vocab")
    write_intent(tmp_path, "skill_other", "de_only", numbers)
    (tmp_path / "skill_other-1.0" / "skill_other" / "locale" / "en-us").rename(
        tmp_path / "skill_other-1.0" / "skill_other" / "locale" / "de-de"
    )
    intents = load_skill_intents(tmp_path, base_identity())
    assert intents.class_names == ["skill_facts:fact", "skill_weather:forecast"]
    assert intents.class_groups == ["skill_facts", "skill_weather"]
    counts = np.bincount(intents.labels).tolist()
    assert counts == [MIN_TEXTS, MAX_TEXTS]  # capped, slots and comments left out
    assert not any("{" in text for text in intents.texts)
    assert load_skill_intents(tmp_path, base_identity()).texts == intents.texts  # seeded


def test_a_folder_without_skills_is_refused_with_what_it_needs(tmp_path):
    with pytest.raises(ValueError, match="OpenVoiceOS skill packages"):
        load_skill_intents(tmp_path, base_identity())
