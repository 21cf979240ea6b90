"""Open-set recognition: is a query one of the known classes at all?

A prototype classifier always answers with its nearest class; an input of no known class gets
a label too. Here a query gets an *unknown-ness score* from its distances to the prototypes
(higher = more likely unknown), and a :class:`RejectionCalibration` turns a wanted share of
known queries accepted ("known acceptance", e.g. 0.95) into a score threshold. Calibrations
are measured on the meta-training side (training and validation classes only) and travel in
the checkpoint (``Checkpoint.calibration``), one threshold per shot count, because prototypes of
1 example sit farther from their queries than prototypes of 5.

Shared by the evaluator (open-set episodes), the service (rejection per query) and the
trainer, whose open-set episodes (``--unknown-way``) train the encoder so that this very score
ranks unknown queries above known ones (:func:`open_set_ranking_loss`).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from protonet.prototypes import compute_prototypes, squared_euclidean

ScoreFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# The known acceptances a calibration measures (``protonet calibrate``): every calibration's
# range lies within the first and last, and so does every acceptance the service's API takes.
ACCEPTANCES = (0.80, 0.90, 0.95, 0.98, 0.99, 0.995, 0.999)


def nearest_distance(distances: torch.Tensor, shots: torch.Tensor) -> torch.Tensor:
    """``[Q, C]`` squared distances, ``[C]`` examples per class -> ``[Q]``: the distance to
    the nearest prototype (the baseline score)."""
    del shots
    return distances.min(dim=1).values


SCORES: dict[str, ScoreFunction] = {"nearest_distance": nearest_distance}
# Chosen on held-out background alphabets (the lake split's validation classes) against the
# post-hoc alternatives (margin and ratio to the second nearest, max softmax, distances
# relative to the mean distance): none won by more than 0.005 AUROC, and each made a
# query's score, and so its acceptance, depend on which other classes are enrolled.
DEFAULT_SCORE = "nearest_distance"


def open_set_score(
    distances: torch.Tensor, shots: torch.Tensor, method: str = DEFAULT_SCORE
) -> torch.Tensor:
    """``[Q, C]`` squared distances to the prototypes and ``[C]`` support examples per class
    -> ``[Q]`` unknown-ness scores (higher = more likely of no known class)."""
    if distances.shape[1] == 0:
        return torch.full((distances.shape[0],), float("inf"))
    return SCORES[method](distances.float(), shots.to(distances.device))


def open_set_ranking_loss(
    support_embeddings: torch.Tensor,
    support_labels: torch.Tensor,
    known_queries: torch.Tensor,
    unknown_queries: torch.Tensor,
) -> torch.Tensor:
    """A smooth ``1 - AUROC`` of the served score on one open-set episode.

    Support ``[n_support, dim]`` / ``[n_support]``, queries of the support's classes
    ``[n_known, dim]`` and of classes outside it ``[n_unknown, dim]`` -> a scalar: the
    logistic loss of every (known, unknown) pair on the difference of their log scores.
    AUROC is exactly the share of such pairs ranked right, and the logarithm makes the loss
    blind to the embedding's scale, so it cannot be lowered by inflating every distance.
    """
    prototypes, classes = compute_prototypes(support_embeddings, support_labels)
    shots = torch.bincount(torch.searchsorted(classes, support_labels), minlength=len(classes))
    known = open_set_score(squared_euclidean(known_queries, prototypes), shots)
    unknown = open_set_score(squared_euclidean(unknown_queries, prototypes), shots)
    gaps = known.clamp_min(1e-12).log()[:, None] - unknown.clamp_min(1e-12).log()[None, :]
    return F.softplus(gaps).mean()


@dataclass(frozen=True)
class RejectionCalibration:
    """Score thresholds by shot count and known acceptance.

    ``thresholds[i][j]``: for prototypes of ``shots[i]`` examples, the score below which a
    share ``acceptances[j]`` of known queries fell on the calibration classes.
    """

    method: str
    shots: tuple[int, ...]
    acceptances: tuple[float, ...]
    thresholds: tuple[tuple[float, ...], ...]
    default_acceptance: float = 0.95
    source: str = ""  # what it was measured on, for the model card

    def threshold(self, shot: int, acceptance: float | None = None) -> float:
        """The threshold for prototypes of ``shot`` examples (the nearest calibrated shot
        count at or below it; more examples only tighten a class) at ``acceptance``
        (linear between calibrated acceptances; clamped to their range)."""
        row = self.thresholds[max(0, bisect.bisect_right(self.shots, shot) - 1)]
        wanted = self.default_acceptance if acceptance is None else acceptance
        return _interpolate(self.acceptances, row, wanted)

    def thresholds_for(self, shots: torch.Tensor, acceptance: float | None = None) -> torch.Tensor:
        """``[C]`` examples per class -> ``[C]`` thresholds."""
        return torch.tensor([self.threshold(int(s), acceptance) for s in shots.tolist()])

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "shots": list(self.shots),
            "acceptances": list(self.acceptances),
            "thresholds": [list(row) for row in self.thresholds],
            "default_acceptance": self.default_acceptance,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RejectionCalibration:
        return cls(
            method=str(values["method"]),
            shots=tuple(int(s) for s in values["shots"]),
            acceptances=tuple(float(a) for a in values["acceptances"]),
            thresholds=tuple(tuple(float(t) for t in row) for row in values["thresholds"]),
            default_acceptance=float(values.get("default_acceptance", 0.95)),
            source=str(values.get("source", "")),
        )


def _interpolate(xs: tuple[float, ...], ys: tuple[float, ...], x: float) -> float:
    if x <= xs[0]:
        return ys[0]
    if x >= xs[-1]:
        return ys[-1]
    i = bisect.bisect_right(xs, x)
    share = (x - xs[i - 1]) / (xs[i] - xs[i - 1])
    return ys[i - 1] + share * (ys[i] - ys[i - 1])


def is_known(
    distances: torch.Tensor,
    shots: torch.Tensor,
    calibration: RejectionCalibration,
    acceptance: float | None = None,
) -> torch.Tensor:
    """``[Q, C]`` distances, ``[C]`` shots -> ``[Q]`` bools: accepted as one of the known
    classes, judged against the threshold of the nearest class's shot count."""
    scores = open_set_score(distances, shots, calibration.method)
    nearest = distances.argmin(dim=1)
    limits = calibration.thresholds_for(shots, acceptance).to(scores.device)[nearest]
    return scores <= limits


# Adapting a calibration to one collection (the service's rejection, and the evaluator's
# open-set text draws, which measure what the service does).
# Held-out scores needed before a collection's own spread replaces the checkpoint's: fewer
# estimate a 95% quantile too roughly to beat the checkpoint's measurement.
MIN_LOO_SCORES = 30
# The quantile is estimated where the sample still has this many scores above it, so a small
# collection is scaled at, e.g., its 90% quantile rather than read off its largest score.
TAIL_SCORES = 3
# The scale is clamped. Upwards generously: a new style of drawing may well spread a collection
# twice as wide as the calibration classes. Downwards less: held-out scores far below the
# checkpoint's usually mean near-duplicate examples (one drawing uploaded twice), and thresholds
# shrunk to them would reject every new drawing.
SCALE_RANGE = (0.5, 3.0)


def leave_one_out_distances(
    embeddings: np.ndarray, rows_class: np.ndarray, prototypes: np.ndarray, counts: np.ndarray
) -> np.ndarray:
    """Each example's squared distance to its class's prototype recomputed without it.

    ``embeddings [m, dim]``, ``rows_class [m]`` (each row's index into the classes),
    ``prototypes [c, dim]`` (the means of all their examples) and ``counts [c]`` -> ``[m]``;
    NaN for examples of classes with a single example (nothing is left without them).
    Without example ``x`` the prototype is ``(n p - x) / (n - 1)``, so the distance is
    ``(n / (n - 1))^2 |x - p|^2``: one pass, no second mean.
    """
    n = counts[rows_class].astype(np.float64)
    offsets = embeddings.astype(np.float64) - prototypes[rows_class]
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(n >= 2, (n / (n - 1)) ** 2, np.nan)
    return factor * np.einsum("ij,ij->i", offsets, offsets)


def shot_threshold(calibration: RejectionCalibration, shot: int, acceptance: float) -> float:
    """The checkpoint's threshold for prototypes of ``shot`` examples, interpolated linearly in
    ``1 / shot`` between the calibrated shot counts around it (a known query's distance to a
    prototype of ``n`` examples grows like ``1 + 1/n`` times the class's spread).

    For comparing held-out scores with the checkpoint's: the threshold a query is judged by
    takes the nearest calibrated shot count at or below instead (conservative: more examples
    only tighten a class), which here would make a collection look tighter than it is.
    """
    shots = calibration.shots
    below = max((s for s in shots if s <= shot), default=shots[0])
    above = min((s for s in shots if s >= shot), default=shots[-1])
    low = calibration.threshold(below, acceptance)
    if above == below:
        return low
    share = (1 / below - 1 / shot) / (1 / below - 1 / above)
    return low + share * (calibration.threshold(above, acceptance) - low)


def collection_scale(
    scores_by_class: Iterable[np.ndarray], calibration: RejectionCalibration, acceptance: float
) -> float | None:
    """:func:`held_out_scale` of a collection's leave-one-out scores: each array holds the
    scores of one class's ``n >= 2`` examples, each held out of a prototype of the other
    ``n - 1``."""
    arrays = list(scores_by_class)
    if not arrays:
        return None
    sizes = np.array([len(a) for a in arrays])
    shots = np.repeat(sizes - 1, sizes)
    return held_out_scale(np.concatenate(arrays), shots, calibration, acceptance)


def held_out_scale(
    scores: np.ndarray, shots: np.ndarray, calibration: RejectionCalibration, acceptance: float
) -> float | None:
    """How much farther than the checkpoint's a collection's known queries lie, from held-out
    scores (``scores [m]``: each a held-out example's distance to its class's prototype of
    ``shots [m]`` other examples); ``None`` with fewer than ``MIN_LOO_SCORES``.

    Each score is divided by the checkpoint's threshold for its shot count at quantile ``q``
    (:func:`shot_threshold`), and the ``q`` quantile of those ratios is the scale (1 where the
    collection behaves like the calibration classes; clamped to ``SCALE_RANGE``). ``q`` is the
    wanted acceptance, but at most ``1 - TAIL_SCORES / m`` for ``m`` scores (and not below the
    calibrated range): the checkpoint's thresholds keep their shape across acceptances, only
    their scale adapts.
    A held-out score is the distance to the example's own class, which bounds the nearest
    distance from above (they differ only for an example nearer to another class).
    """
    total = len(scores)
    if total < MIN_LOO_SCORES:
        return None
    level = max(min(acceptance, 1.0 - TAIL_SCORES / total), calibration.acceptances[0])
    limits = {n: shot_threshold(calibration, n, level) for n in set(shots.tolist())}
    divisors = np.array([limits[n] for n in shots.tolist()], dtype=np.float64)
    ratio = float(np.quantile(scores / divisors, level))
    return float(np.clip(ratio, *SCALE_RANGE))
