"""What a similarity score means on *this* archive: open-set "same person" verdicts.

A search for someone the archive does not hold still returns its nearest strangers, and the more
faces the archive holds, the closer the best stranger comes. So a verdict threshold that is right
for one pair of photos (1:1 verification) calls strangers "the same person" in a large archive.
The verdicts here are calibrated for the gallery they are applied to, as NIST's 1:N evaluations
define it:

* A model's **stranger model** is how close the *closest* stranger comes: each face of a labelled
  calibration set (a *probe*) is compared with the faces of every other person there (a gallery
  of ``n`` faces) and its best score kept (``bench/lfw_retrieval.py`` on LFW). Those maxima follow
  an extreme-value (Gumbel) law, fitted to their median and 95th percentile: the body of the
  distribution, below the few probes whose "stranger" is the same person filed under another
  name. Scoring pairs one by one and treating them as independent would instead give thresholds
  far too high, as strangers are not alike for every probe (a blurred or averted face sits
  closer to everyone).
* A Gumbel law is max-stable: in a gallery of ``N`` faces the best stranger's law is the same one
  moved up by ``scale * ln(N / n)``, so a search for an absent person gets a hit at or above ``t``
  with probability ``FPIR(t) = 1 - exp(-exp(-(t - location - scale * ln(N / n)) / scale))`` (the
  false-positive identification rate).
* **same person**: the score from which ``FPIR`` is at most the target (``FACESEARCH_TARGET_FPIR``,
  default 1%) at the index's current size. It rises as the archive grows.
* **possible match**: the same rule at ten times the target (10% by default, at most half): worth
  a look, but in an archive this size about one search in ten for an absent person shows one.

The 1:1 threshold (accuracy-optimal on balanced same/different pairs) is kept too, for decisions
about two faces alone, such as linking the faces of a video track.

Where the calibration comes from, first found first: the one stored with the index
(``facesearch calibrate``, fitted on the user's own labelled faces or on LFW's ``pairs.txt``),
then the one shipped for the model (``search_engine/calibrations/``, measured on LFW by
``bench/lfw_retrieval.py``); a model with neither gives no verdicts.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING

from .errors import ConfigError
from .types import EmbedderInfo

if TYPE_CHECKING:
    from .index.base import FaceIndex

SAME_PERSON = "same_person"
POSSIBLE = "possible"

#: "possible" allows this many times the target FPIR (capped at :data:`_MAX_POSSIBLE_FPIR`).
POSSIBLE_FACTOR = 10
_MAX_POSSIBLE_FPIR = 0.5

#: How many times larger than the calibration's gallery an archive may be before a threshold
#: for it is refused as guesswork.
_MAX_GALLERY_RATIO = 1000


@dataclass(frozen=True)
class Calibration:
    """One model's measured score behaviour.

    Attributes:
        model: the embedder key it was measured for (``mobilefacenet-ms1m-r1``).
        location, scale: the Gumbel law of the best stranger score (cosine similarity) in a
            gallery of ``gallery`` faces.
        gallery: the calibration gallery's size, faces.
        probes: how many probes the law was fitted to.
        pair_threshold: the 1:1 threshold, accuracy-optimal on balanced same/different pairs.
        measured_on: what the faces were, in words.
    """

    model: str
    location: float
    scale: float
    gallery: int
    probes: int
    pair_threshold: float
    measured_on: str

    def __post_init__(self) -> None:
        if self.scale <= 0 or self.gallery < 1 or self.probes < 1:
            raise ConfigError(f"calibration of {self.model}: scale, gallery and probes must be positive")

    def _location_at(self, gallery_size: int) -> float:
        return self.location + self.scale * math.log(max(int(gallery_size), 1) / self.gallery)

    def fpir(self, score: float, gallery_size: int) -> float:
        """The share of searches over ``gallery_size`` faces for an absent person whose best hit
        scores at least ``score``."""
        return -math.expm1(-math.exp(-(score - self._location_at(gallery_size)) / self.scale))

    def threshold(self, gallery_size: int, target_fpir: float) -> float:
        """The score from which a search over ``gallery_size`` faces for an absent person gets a
        hit with probability ``target_fpir`` (at most 1: no cosine similarity is higher).

        Raises:
            ConfigError: the archive is over 1000 times larger than the calibration's gallery.
        """
        if not 0.0 < target_fpir < 1.0:
            raise ConfigError(f"the target FPIR must be within (0, 1), got {target_fpir}")
        if gallery_size > _MAX_GALLERY_RATIO * self.gallery:
            raise ConfigError(
                f"{self.model}'s calibration (a gallery of {self.gallery:,} faces) cannot vouch for an archive of "
                f"{gallery_size:,}; calibrate it on more labelled faces or set FACESEARCH_SAME_PERSON_THRESHOLD"
            )
        return min(
            self._location_at(gallery_size) - self.scale * math.log(-math.log1p(-target_fpir)),
            1.0,
        )

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "location": round(self.location, 5),
            "scale": round(self.scale, 5),
            "gallery": self.gallery,
            "probes": self.probes,
            "pair_threshold": self.pair_threshold,
            "measured_on": self.measured_on,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        return cls(
            model=data["model"],
            location=float(data["location"]),
            scale=float(data["scale"]),
            gallery=int(data["gallery"]),
            probes=int(data["probes"]),
            pair_threshold=float(data["pair_threshold"]),
            measured_on=data["measured_on"],
        )


@dataclass(frozen=True)
class Verdicts:
    """The thresholds one search's hits were judged by, and what they rest on.

    ``same_person`` and ``possible`` are cosine similarities; ``gallery_size`` faces were searched;
    ``target_fpir`` is the share of searches for an absent person allowed a "same person" hit
    (:data:`POSSIBLE_FACTOR` times it, a "possible" one). ``fixed`` is True when
    ``FACESEARCH_SAME_PERSON_THRESHOLD`` set the threshold by hand.
    """

    same_person: float
    possible: float
    gallery_size: int
    target_fpir: float
    fixed: bool = False

    def of(self, score: float) -> str | None:
        """``"same_person"``, ``"possible"`` or None for one hit's score."""
        if score >= self.same_person:
            return SAME_PERSON
        if score >= self.possible:
            return POSSIBLE
        return None

    def to_dict(self) -> dict:
        return {
            "same_person_threshold": round(self.same_person, 4),
            "possible_threshold": round(self.possible, 4),
            "gallery_size": self.gallery_size,
            "target_fpir": self.target_fpir,
            "fixed": self.fixed,
        }


def calibration_for(index: FaceIndex) -> Calibration | None:
    """The calibration that judges searches of ``index`` (see :func:`calibration_and_origin`)."""
    return calibration_and_origin(index)[0]


def calibration_and_origin(index: FaceIndex) -> tuple[Calibration | None, bool]:
    """The calibration that judges searches of ``index``: the one stored with it, else the one
    shipped for its model, else None; and whether it is the stored one."""
    stored = index.get_calibration()
    if stored is not None:
        return stored, True
    return shipped_calibration(index.model), False


@cache
def shipped_calibration(model: EmbedderInfo) -> Calibration | None:
    """The calibration measured for ``model`` where it was developed (``search_engine/calibrations``),
    or None for a model nobody has calibrated."""
    resource = resources.files("search_engine") / "calibrations" / f"{model.key}.json"
    if not resource.is_file():
        return None
    return Calibration.from_dict(json.loads(resource.read_text()))


def verdicts(
    calibration: Calibration | None,
    gallery_size: int,
    target_fpir: float,
    fixed_threshold: float | None = None,
) -> Verdicts | None:
    """The thresholds for a search over ``gallery_size`` faces: calibrated, or ``fixed_threshold``
    for both levels when one is set; None when neither is there (the model is uncalibrated)."""
    if fixed_threshold is not None:
        return Verdicts(fixed_threshold, fixed_threshold, gallery_size, target_fpir, fixed=True)
    if calibration is None:
        return None
    same = calibration.threshold(gallery_size, target_fpir)
    possible = calibration.threshold(gallery_size, min(POSSIBLE_FACTOR * target_fpir, _MAX_POSSIBLE_FPIR))
    return Verdicts(same, min(possible, same), gallery_size, target_fpir)
