"""Rejection of unknown inputs in the service: where its shapes are defined.

One idea, with a name for each shape it takes (docs/service.md, "Rejection of unknowns", has
the table with the HTTP API's side):

* calibration: the core's :class:`~protonet.open_set.RejectionCalibration` (thresholds by shot
  count and known acceptance, measured on training-side classes), carried by the checkpoint
  (``Checkpoint.calibration``).
* setting: :class:`RejectionSetting`, what a collection (``LiveCollection.rejection_setting``)
  or a query asks for: none, the calibration's default acceptance, or an acceptance target.
  It has three written forms: the request's choice (:meth:`~RejectionSetting.to_choice`,
  ``"none"``, ``"default"`` or ``{"acceptance": a}``, which snapshot headers also hold), the
  stored column (:meth:`~RejectionSetting.to_column`, ``collections.rejection``: ``"none"``,
  ``"default"`` or ``"0.99"``) and a summary's description (:meth:`~RejectionSetting.describe`,
  ``{"mode": ...}`` with the default acceptance resolved).
* policy: :class:`RejectionPolicy`, a setting resolved against the served model's calibration
  (or a 422 that says what to fix).
* verdict: :class:`Verdict`, one query's score against its threshold (:func:`judge`).
* applied rejection: :class:`AppliedRejection`, what a query answer reports about the rejection
  it applied (acceptance, and where the thresholds came from).

The thresholds are scaled to each collection:

* :class:`LeaveOneOutScores`: the adaptation to a collection from its own support set. Each
  example of a class with at least 2 examples is a known query held out of its class: its
  squared distance to the prototype of the *other* examples is what a known query's score looks
  like in this collection (computed from the stored embeddings, no re-encoding). With enough of
  them (``MIN_LOO_SCORES``), the checkpoint's thresholds are scaled by how far this
  collection's held-out scores lie from the checkpoint's at the matching shot count
  (:func:`protonet.open_set.collection_scale`, in the core: the evaluator measures it too).
  An adapted collection (protonet/adaptation.py) is scaled by the held-out scores its
  adaptation measured instead (:class:`AdapterScores`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from protonet.open_set import (
    RejectionCalibration,
    collection_scale,
    held_out_scale,
    leave_one_out_distances,
    open_set_score,
)
from service.errors import AcceptanceOutOfRangeError, RejectionUnavailableError
from service.storage.repository import StoredEmbeddings

NONE = "none"
DEFAULT = "default"
# Scores the service can compute from the ranked nearest classes alone (a query's answer has
# the distances of its top-k, not of every class); nearest_distance needs only the first.
NEAREST_CLASS_SCORES = frozenset({"nearest_distance"})
ThresholdSource = Literal["checkpoint", "collection", "adapter"]


@dataclass(frozen=True)
class RejectionSetting:
    """No rejection (``calibrated`` false), or calibrated rejection at ``acceptance`` (the share
    of known inputs to accept; ``None``: the checkpoint's default acceptance)."""

    calibrated: bool = False
    acceptance: float | None = None

    @classmethod
    def from_choice(cls, choice: str | float) -> RejectionSetting:
        """``"none"``, ``"default"`` or an acceptance (as the API's JSON gives them)."""
        if choice == NONE:
            return cls()
        if choice == DEFAULT:
            return cls(calibrated=True)
        if isinstance(choice, str):
            raise ValueError(f"rejection must be 'none', 'default' or an acceptance: {choice!r}")
        return cls(calibrated=True, acceptance=float(choice))

    def to_choice(self) -> str | dict[str, float]:
        """The request's JSON form (also a snapshot header's): ``"none"``, ``"default"`` or
        ``{"acceptance": a}``."""
        if self.calibrated and self.acceptance is not None:
            return {"acceptance": self.acceptance}
        return self.to_column()

    def to_column(self) -> str:
        """The stored form: ``"none"``, ``"default"`` or the acceptance (``"0.99"``)."""
        if not self.calibrated:
            return NONE
        return DEFAULT if self.acceptance is None else repr(self.acceptance)

    @classmethod
    def from_column(cls, value: str) -> RejectionSetting:
        return cls.from_choice(value if value in (NONE, DEFAULT) else float(value))

    def resolve(
        self, calibration: RejectionCalibration | None, *, model: str
    ) -> RejectionPolicy | None:
        """The policy this setting means with the calibration of the served ``model``
        (``None``: no rejection). :class:`RejectionUnavailableError` if the model has no usable
        calibration, :class:`AcceptanceOutOfRangeError` outside its calibrated range."""
        if not self.calibrated:
            return None
        if calibration is None:
            raise RejectionUnavailableError(_no_calibration(model))
        if calibration.method not in NEAREST_CLASS_SCORES:
            raise RejectionUnavailableError(
                f"model {model!r}'s rejection score {calibration.method!r} needs every "
                "class's distance, which the service does not compute: ask for rejection 'none'"
            )
        acceptance = calibration.default_acceptance if self.acceptance is None else self.acceptance
        low, high = calibration.acceptances[0], calibration.acceptances[-1]
        if not low <= acceptance <= high:
            raise AcceptanceOutOfRangeError(
                f"rejection acceptance {acceptance!r} is outside the served model's calibrated "
                f"range [{low:g}, {high:g}]: pick one within it (GET /v1/model shows it)"
            )
        return RejectionPolicy(calibration, acceptance)

    def describe(self, calibration: RejectionCalibration | None) -> dict[str, object]:
        """``{"mode": "none"}`` or ``{"mode": "calibrated", "acceptance": a}`` (the default
        acceptance resolved; ``None`` only if the served model has no calibration)."""
        if not self.calibrated:
            return {"mode": NONE}
        acceptance = self.acceptance
        if acceptance is None and calibration is not None:
            acceptance = calibration.default_acceptance
        return {"mode": "calibrated", "acceptance": acceptance}


def _no_calibration(model: str) -> str:
    """Why ``model`` cannot reject, and the advice that works for an image or a text model
    alike (``protonet calibrate`` measures both)."""
    return (
        f"model {model!r} has no rejection calibration: ask for rejection 'none', or serve it "
        "from a calibrated checkpoint (protonet calibrate --checkpoint CKPT --data DIR "
        "--write-card, then restart the service)"
    )


@dataclass(frozen=True)
class RejectionPolicy:
    """A resolved setting: the served model's calibration at one known acceptance."""

    calibration: RejectionCalibration
    acceptance: float

    def threshold(self, shot: int, scale: float | None = None) -> float:
        """The limit on the score of a query whose nearest class has ``shot`` examples,
        scaled to the collection when ``scale`` is known."""
        limit = self.calibration.threshold(shot, self.acceptance)
        return limit if scale is None else limit * scale


@dataclass(frozen=True)
class Verdict:
    """Whether a query is one of the known classes: its score against the threshold."""

    known: bool
    score: float
    threshold: float


@dataclass(frozen=True)
class AppliedRejection:
    """What a query answer's top-level ``rejection`` reports."""

    acceptance: float
    threshold_source: ThresholdSource

    def to_json(self) -> dict[str, object]:
        return {
            "mode": "calibrated",
            "acceptance": self.acceptance,
            "threshold_source": self.threshold_source,
        }


def judge(
    policy: RejectionPolicy, distances: list[float], shots: list[int], scale: float | None
) -> Verdict:
    """One query's verdict from its squared distances to its ranked nearest classes (nearest
    first) and those classes' example counts: the score (``policy``'s method) against the
    threshold of the nearest class's shot count."""
    score = open_set_score(
        torch.tensor([distances], dtype=torch.float32),
        torch.tensor(shots),
        policy.calibration.method,
    )
    value = float(score[0])
    threshold = policy.threshold(shots[0], scale)
    return Verdict(value <= threshold, value, threshold)


class ScaleCache:
    """A collection's threshold scale per policy, computed once per change of its held-out
    scores (at most ``CACHED_POLICIES`` policies kept)."""

    CACHED_POLICIES = 16

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[tuple[RejectionCalibration, float], float | None] = {}
        self._generation = 0  # bumped by every change: a scale computed before it is stale

    def invalidate(self) -> None:
        with self._lock:
            self._generation += 1
            self._cache.clear()

    def cached(self, policy: RejectionPolicy) -> tuple[bool, float | None]:
        key = (policy.calibration, policy.acceptance)
        with self._lock:
            return key in self._cache, self._cache.get(key)

    def get(self, policy: RejectionPolicy, compute: Callable[[], float | None]) -> float | None:
        """The cached scale, or ``compute()`` (outside the lock: O(examples)), then cached
        unless a change came meanwhile."""
        key = (policy.calibration, policy.acceptance)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
            generation = self._generation
        scale = compute()
        with self._lock:
            if generation == self._generation:
                if len(self._cache) >= self.CACHED_POLICIES:
                    self._cache.clear()
                self._cache[key] = scale
        return scale


class AdapterScores:
    """An adapted collection's held-out scores: those its adaptation job measured (each
    example held out of its fold, its distance in the adapted space to its class's prototype
    made of the fold's other examples; protonet/adaptation.py), fixed until the next adapter.
    The leave-one-out scores of the adapted examples would be too small: the map was fitted
    to pull those very examples in."""

    complete = True

    def __init__(self, scores: np.ndarray, shots: np.ndarray) -> None:
        self.scores = np.asarray(scores, dtype=np.float64)
        self.shots = np.asarray(shots, dtype=np.int64)
        self._scales = ScaleCache()

    def cached(self, policy: RejectionPolicy) -> tuple[bool, float | None]:
        return self._scales.cached(policy)

    def scale(self, policy: RejectionPolicy) -> float | None:
        def compute() -> float | None:
            return held_out_scale(self.scores, self.shots, policy.calibration, policy.acceptance)

        return self._scales.get(policy, compute)


class LeaveOneOutScores:
    """Per class of at least 2 examples, its examples' held-out scores; and the collection's
    scale (:func:`collection_scale`) per policy, cached until the next change.

    Updated by the collection with every class it recomputes (the embeddings are at hand then);
    ``complete`` is false when classes were loaded without their embeddings (a persisted IVF
    index), and the registry fills them in from storage before a rejection needs them. The
    scale costs one pass over the held-out scores (O(examples)) after each change, at the
    first query that asks for it.
    """

    def __init__(self) -> None:
        self._by_class: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()
        self._scales = ScaleCache()
        self.complete = True

    def update(
        self,
        class_ids: np.ndarray,
        counts: np.ndarray,
        prototypes: np.ndarray,
        stored: StoredEmbeddings,
    ) -> None:
        """Replace the scores of ``class_ids [c]`` (sorted, with ``counts [c]`` and
        ``prototypes [c, dim]`` made from all their ``stored`` embeddings)."""
        rows_class = np.searchsorted(class_ids, stored.class_ids)
        scores = leave_one_out_distances(stored.embeddings, rows_class, prototypes, counts)
        order = np.argsort(rows_class, kind="stable")
        groups = np.split(scores[order], np.cumsum(counts)[:-1])
        with self._lock:
            for class_id, count, group in zip(
                class_ids.tolist(), counts.tolist(), groups, strict=True
            ):
                if count >= 2:
                    self._by_class[class_id] = group
                else:
                    self._by_class.pop(class_id, None)
            self._scales.invalidate()

    def remove(self, class_ids: Iterable[int]) -> None:
        with self._lock:
            for class_id in class_ids:
                self._by_class.pop(class_id, None)
            self._scales.invalidate()

    def count(self) -> int:
        """Held-out scores held (examples of classes with at least 2)."""
        with self._lock:
            return sum(len(scores) for scores in self._by_class.values())

    def cached(self, policy: RejectionPolicy) -> tuple[bool, float | None]:
        """``(True, scale)`` if the scale for ``policy`` is known (nothing to compute)."""
        known, scale = self._scales.cached(policy)
        return self.complete and known, scale

    def scale(self, policy: RejectionPolicy) -> float | None:
        """The collection's scale for ``policy`` (``None``: too few scores), cached."""

        def compute() -> float | None:
            with self._lock:
                arrays = list(self._by_class.values())
            return collection_scale(arrays, policy.calibration, policy.acceptance)

        return self._scales.get(policy, compute)
