"""The README's layout table is true: every module of the packages it describes is named in
its package's row, and every module a row names exists (a moved or deleted module fails here
instead of leaving the table stale)."""

from __future__ import annotations

import re

import pytest

from tests.conftest import REPO_ROOT

# The rows that list their package's modules one by one (benchmarks/ and tests/ are described
# as a whole).
PACKAGES = (
    "protonet",
    "training",
    "service",
    "service/api",
    "service/edge",
    "service/collections",
    "service/storage",
)
SKIPPED = {"__init__.py", "__main__.py"}


def layout_rows() -> dict[str, str]:
    """The Layout section's rows by their first cell (``service/api/`` -> the row's text)."""
    section = (REPO_ROOT / "README.md").read_text(encoding="utf-8").split("\n## Layout\n")[1]
    section = section.split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        if match := re.match(r"\| `([^`]+)` \|", line):
            rows[match.group(1)] = line
    return rows


@pytest.mark.parametrize("package", PACKAGES)
def test_every_module_is_named_in_its_row(package: str) -> None:
    row = layout_rows()[f"{package}/"]
    modules = sorted(p.name for p in (REPO_ROOT / package).glob("*.py") if p.name not in SKIPPED)
    missing = [name for name in modules if f"`{name}`" not in row]
    assert not missing, f"README.md's layout row for {package}/ misses {missing}"


@pytest.mark.parametrize("package", PACKAGES)
def test_every_module_a_row_names_exists(package: str) -> None:
    row = layout_rows()[f"{package}/"]
    named = set(re.findall(r"`([a-z_]+\.py)`", row))
    gone = sorted(name for name in named if not (REPO_ROOT / package / name).exists())
    assert not gone, (
        f"README.md's layout row for {package}/ names modules that are not there: {gone}"
    )
