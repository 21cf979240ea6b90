"""The one rule for class labels, applied wherever a label enters: request bodies and paths.

A label is stored and compared in Unicode NFC, so that ``é`` typed as one code point or as
``e`` plus a combining accent is one class, not two that print alike. Refused, each with a
message that says why: control, format and line/paragraph separator characters (Unicode
categories Cc, Cf, Zl, Zp, and lone surrogates), which are invisible or break lines
(``a\\u200b`` would print as ``a``); whitespace at either end (``a `` against ``a``); and ``.``
or ``..`` as the label or as a ``/``-separated part of it, because in a URL path those
segments mean "this" and "the parent": an HTTP client or proxy that normalizes the path would
turn ``DELETE .../classes/..`` into a request for another resource.

Fullwidth and other compatibility forms (``ａ`` against ``a``) stay distinct: NFKC would fold
them, but also ``x²`` into ``x2``, changing what people wrote.
"""

from __future__ import annotations

import unicodedata

# Characters (in NFC); the storage column holds as many (service/storage/records.py).
MIN_LENGTH, MAX_LENGTH = 1, 200
FORBIDDEN_CATEGORIES = {
    "Cc": "control",
    "Cf": "format",
    "Zl": "line separator",
    "Zp": "paragraph separator",
    "Cs": "surrogate",
}
# The part of the rule a JSON-schema pattern can state (C0 and C1 controls, U+2028, U+2029);
# the rest is enforced by :func:`normalize_label` and stated in the field's description.
LABEL_PATTERN = "^[^\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029]+$"
RULE = (
    f"{MIN_LENGTH}-{MAX_LENGTH} characters, stored in Unicode NFC; no control, format or "
    "line/paragraph separator characters, no whitespace at either end, and not '.' or '..' "
    "(nor such a part between '/'s)"
)


def normalize_label(text: str) -> str:
    """``text`` in NFC, or ``ValueError`` saying which part of the rule it breaks."""
    label = unicodedata.normalize("NFC", text)
    for character in label:
        kind = FORBIDDEN_CATEGORIES.get(unicodedata.category(character))
        if kind is not None:
            raise ValueError(
                f"a label may not contain {kind} characters (found U+{ord(character):04X})"
            )
    if label != label.strip():
        raise ValueError("a label may not begin or end with whitespace")
    if not MIN_LENGTH <= len(label) <= MAX_LENGTH:
        raise ValueError(
            f"a label has {MIN_LENGTH}-{MAX_LENGTH} characters (in NFC); got {len(label)}"
        )
    if any(segment in (".", "..") for segment in label.split("/")):
        raise ValueError(
            "a label may not be '.' or '..', nor have such a part between '/'s: in a URL "
            "path they address another resource"
        )
    return label
