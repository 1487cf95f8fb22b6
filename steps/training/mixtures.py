"""Data mixtures as data: the final SODA mix and the ablations' mixes (reference.md section 4,
shared/seeds/003_*.txt "Data sources", "Annealing", "Nemotron mixture", "Token composition").

A `Mixture` names sampling weights over data sources (instance sampling with packing, as
Levanter's MixtureDataset does, so weights are close to token shares). Weights are validated:
finite, non-negative, summing to 1 within 1e-6, over known source names. A mixture may also carry
a token composition (S / S+A / S+A+T, see steps.training.composition), which says how its
documents must be built; the mixture itself only names the sources.

Ablations (what the seeds say; where they are silent, what we chose is marked):
- data source: MLS-en vs Emilia vs YODAS2-en, each 100%, both as annealing targets (switching the
  data for the LR decay phase of a run started on `prelim`, SODA-prelim's multilingual YODAS2) and
  as small scratch runs (150M, 10B tokens). "Emilia" = Emilia-en + Emilia-YODAS-en in proportion
  to size (the seeds' table lists Emilia as "English+Yodas-English").
- text ratio: X% Nemotron-CC HQ-actual + (100-X)% YODAS2-en, X from 0 to 90%. The exact X values
  were not published; `TEXT_RATIOS` is our grid.
- token composition: YODAS2-en only (no Nemotron), documents S (codebook 0 only, no text),
  S+A (all 8 codebooks, no text), S+A+T (the standard interleaved documents).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional

# Source names -> what they are. Cache paths for them come from tokenize steps.
SOURCES: dict[str, str] = {
    "yodas2-en": "YODAS2 English (espnet/yodas2; pre-encoded soda-research/yodas2-mm-pretrain)",
    "emilia-yodas-en": "Emilia-YODAS English (amphion/Emilia-Dataset; soda-research/emilia-mm-pretrain)",
    "emilia-en": "Emilia English (amphion/Emilia-Dataset; soda-research/emilia-mm-pretrain)",
    "nemotron-cc-hq-actual": "Nemotron-CC high-quality actual (text only)",
    "mls-en": "Multilingual LibriSpeech English (parler-tts/mls_eng), excluded after ablation",
    "yodas2-multilingual": "YODAS2 all languages (SODA-prelim's data)",
}
COMPOSITIONS = ("S", "S+A", "S+A+T")
WEIGHT_TOLERANCE = 1e-6
TEXT_RATIOS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)  # our grid; the seeds give only 0..90%


def validate_weights(weights: Mapping[str, float], known: Optional[Iterable[str]] = None,
                     where: str = "mixture") -> dict[str, float]:
    """Check sampling weights; returns them as a plain dict. Raises ValueError naming the problem."""
    known = set(SOURCES if known is None else known)
    if not weights:
        raise ValueError(f"{where}: no weights given; name at least one source from {sorted(known)}")
    unknown = sorted(set(weights) - known)
    if unknown:
        raise ValueError(f"{where}: unknown source(s) {unknown}; known sources are {sorted(known)}")
    for name, w in weights.items():
        if not isinstance(w, (int, float)) or isinstance(w, bool) or not math.isfinite(w):
            raise ValueError(f"{where}: weight of {name!r} must be a finite number, got {w!r}")
        if w < 0:
            raise ValueError(f"{where}: weight of {name!r} is negative ({w}); weights must be >= 0")
    total = math.fsum(weights.values())
    if abs(total - 1.0) > WEIGHT_TOLERANCE:
        raise ValueError(
            f"{where}: weights sum to {total:.9g}, not 1 (tolerance {WEIGHT_TOLERANCE:g}); "
            f"got {dict(weights)}. Normalise them (see `normalized`) or fix the numbers."
        )
    return {k: float(v) for k, v in weights.items()}


def normalized(weights: Mapping[str, float]) -> dict[str, float]:
    """Weights scaled to sum to 1 (for proportions such as dataset sizes)."""
    total = math.fsum(weights.values())
    if not total > 0:
        raise ValueError(f"cannot normalise weights that sum to {total}: {dict(weights)}")
    return {k: v / total for k, v in weights.items()}


@dataclass(frozen=True)
class Mixture:
    name: str
    weights: tuple[tuple[str, float], ...]
    description: str = ""
    composition: str = "S+A+T"
    sources: tuple[str, ...] = field(default=tuple(SOURCES), repr=False)

    def __post_init__(self):
        names = [n for n, _ in self.weights]
        if len(set(names)) != len(names):
            raise ValueError(f"mixture {self.name!r}: a source is listed twice: {names}")
        validate_weights(dict(self.weights), self.sources, where=f"mixture {self.name!r}")
        if self.composition not in COMPOSITIONS:
            raise ValueError(f"mixture {self.name!r}: composition {self.composition!r} is not one of {COMPOSITIONS}")

    @property
    def as_dict(self) -> dict[str, float]:
        return dict(self.weights)

    @property
    def active_sources(self) -> list[str]:
        """Sources with a non-zero weight (each needs a token cache)."""
        return [n for n, w in self.weights if w > 0]


def mixture(name: str, weights: Mapping[str, float], description: str = "", composition: str = "S+A+T") -> Mixture:
    return Mixture(name, tuple(weights.items()), description, composition)


# ---- the paper's mixes --------------------------------------------------------------------

FINAL = mixture(
    "final",
    {"yodas2-en": 0.516, "emilia-yodas-en": 0.288, "emilia-en": 0.146, "nemotron-cc-hq-actual": 0.05},
    "SODA's final mix: 5% Nemotron text, 95% speech in proportion to size (IsoFLOP sweep, final runs)",
)
PRELIM = mixture("prelim", {"yodas2-multilingual": 1.0}, "SODA-prelim: multilingual YODAS2 only")
EMILIA_BOTH = normalized({"emilia-en": 0.146, "emilia-yodas-en": 0.288})


def text_ratio_mixture(text_fraction: float) -> Mixture:
    """The text-ratio ablation: `text_fraction` Nemotron, the rest YODAS2-en."""
    if not 0.0 <= text_fraction <= 1.0:
        raise ValueError(f"text fraction must be in [0, 1], got {text_fraction}")
    weights = {"yodas2-en": 1.0 - text_fraction, "nemotron-cc-hq-actual": text_fraction}
    return mixture(f"text-{round(text_fraction * 100)}pct", weights,
                   f"text-ratio ablation: {text_fraction:.0%} Nemotron + {1 - text_fraction:.0%} YODAS2-en")


def composition_mixture(composition: str) -> Mixture:
    """The token-composition ablation: YODAS2-en only, documents built as `composition`."""
    return mixture(f"composition-{composition}", {"yodas2-en": 1.0},
                   f"token-composition ablation {composition}: YODAS2-en, no Nemotron", composition)


_SOURCE_ABLATION = {
    "mls": ({"mls-en": 1.0}, "MLS English"),
    "emilia": (EMILIA_BOTH, "Emilia English + Emilia-YODAS English, by size"),
    "yodas": ({"yodas2-en": 1.0}, "YODAS2 English"),
}

MIXTURES: dict[str, Mixture] = {
    m.name: m
    for m in (
        FINAL,
        PRELIM,
        *(mixture(f"source-{k}", w, f"data-source ablation (annealing target or 150M scratch run): {d}")
          for k, (w, d) in _SOURCE_ABLATION.items()),
        *(text_ratio_mixture(x) for x in TEXT_RATIOS),
        *(composition_mixture(c) for c in COMPOSITIONS),
    )
}


def get_mixture(name: str) -> Mixture:
    if name not in MIXTURES:
        raise KeyError(f"unknown mixture {name!r}; known: {', '.join(MIXTURES)}")
    return MIXTURES[name]


# ---- Levanter -----------------------------------------------------------------------------


def anneal_start_step(num_steps: int, batch_size: int, decay_fraction: float = 0.2,
                      block_size: int = 2048) -> int:
    """First step of the LR decay phase, rounded up so that its sequence offset falls on a
    mixture block boundary (Levanter requires stage starts at multiples of `block_size`)."""
    step = math.ceil(num_steps * (1.0 - decay_fraction))
    unit = block_size // math.gcd(block_size, batch_size)
    return math.ceil(step / unit) * unit


def levanter_train_weights(base: Mixture, anneal: Optional[Mixture] = None, anneal_step: int = 0):
    """Levanter's `train_weights`: a dict, or a stage list [(0, base), (anneal_step, anneal)]."""
    if anneal is None:
        return base.as_dict
    if anneal_step <= 0:
        raise ValueError(f"anneal_step must be positive when annealing, got {anneal_step}")
    names = set(base.as_dict) | set(anneal.as_dict)
    pad = lambda w: {n: w.get(n, 0.0) for n in sorted(names)}  # noqa: E731
    return [(0, pad(base.as_dict)), (anneal_step, pad(anneal.as_dict))]
