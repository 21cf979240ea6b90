"""Schemathesis's ``st`` command line, with one workaround, for tests/service/test_fuzz.py.

CPython 3.11 before 3.11.8 can raise a spurious ``SystemError: AST constructor recursion depth
mismatch`` from ``ast.parse`` deep in a call stack (gh-106905). Hypothesis parses source files
only to print a lambda in a strategy's repr, and schemathesis's coverage phase reaches that
deep enough to hit the bug and abort an operation. The workaround gives such a lambda the
description Hypothesis uses when it cannot find the source; nothing else changes.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from hypothesis.internal import lambda_sources
from schemathesis.cli import schemathesis

describe: Callable[[Any], str] = lambda_sources._lambda_description


def describe_tolerantly(function: Any) -> str:
    try:
        return describe(function)
    except SystemError:
        return "lambda: <unknown>"


lambda_sources._lambda_description = describe_tolerantly

if __name__ == "__main__":
    sys.exit(schemathesis())
