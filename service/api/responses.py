"""Fast JSON responses for the hot endpoints (query, embed).

orjson writes the body straight from plain Python values, dataclasses and numpy arrays, with no
intermediate pydantic models (several microseconds per prediction). The routes still declare
their pydantic ``response_model``, which documents the same shape in the OpenAPI schema.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Response

from service.collections.live_collection import QueryAnswer


def json_response(content: Any, status_code: int = 200) -> Response:
    """``content`` as a JSON response; numpy arrays become lists (float32 stays float32)."""
    body = orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, status_code=status_code, media_type="application/json")


def query_answer_body(result: QueryAnswer) -> dict[str, Any]:
    """The best class's fields, plus the ranked classes as ``"top_k"`` (``RankedClass``
    dataclasses serialize as objects with the same three fields); with a rejection verdict,
    also ``known``, ``score`` and ``threshold``, and no best class if the query is unknown."""
    best, verdict = result.best, result.verdict
    if verdict is None:  # no rejection asked: the keys of old clients, no more
        return {
            "label": best.label,
            "probability": best.probability,
            "distance": best.distance,
            "top_k": result.ranked,
        }
    known = verdict.known
    return {
        "label": best.label if known else None,
        "probability": best.probability if known else None,
        "distance": best.distance if known else None,
        "top_k": result.ranked,
        "known": known,
        "score": verdict.score,
        "threshold": verdict.threshold,
    }
