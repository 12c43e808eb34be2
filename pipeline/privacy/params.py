"""Versioned, rotatable privacy parameter sets.

Why a separate, frozen data object: every number that decides how a person
becomes "an occurrence of one of 1,000 groups" (the deployment seed that fixes
the projection and the hash family, the noise scale, the fictitious-person
rate) must be written down, versioned and recorded with every output record,
so an analysis knows which parameters produced the data and a regulator can
check them. The noise itself is *not* in here: it is drawn from fresh OS
entropy at run time and is never reproducible from this file.

The file format is JSON. Arrays (the reference statistics used to centre and
whiten a descriptor before hashing, the balancing offsets, a learned codebook)
are stored as base64 float32 so that the file stays a single self-contained
artifact. Unknown keys are rejected: a typo in a hand-edited parameter file
must not silently fall back to a default.

A parameter set with a ``codebook`` (issue 10: a learned, balanced quantizer,
pipeline/privacy/quantizer.py) groups by nearest centroid instead of by the
random hash directions; one without keeps the hash. The key is written only
when a codebook is present, so files without one are exactly what earlier
code wrote and read, and the schema version did not change.
"""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = ["PrivacyParams", "ReferenceStats", "ParamsError", "SCHEMA_VERSION", "PROFILES"]

SCHEMA_VERSION = 1
DEFAULT_VERSION = "pp-2026.11-default"
# The default deployment seed is public (it is in the source code). It is fine
# for development and tests; a production deployment must run `calibrate`
# (which draws a fresh secret seed) so the hash family is its own.
DEFAULT_SEED = 20261101

# Fictitious-person profiles (see docs/PRIVACY.md, "Profiles"). Padding is per (camera, window, group),
# so its variance multiplies into every flow co-occurrence over 1,000 groups: the strict profile
# (floor 2, r = 0.5: a linkage bound of 2 per window) adds ~3,000 occurrences per camera-minute
# and makes camera-to-camera flows unmeasurable; the flow profile adds about one per camera-window
# (r = 1/1001), hides single occurrences among fictitious ones at roughly a third of real traffic
# and keeps flows estimable. The default is the flow profile because flows are what the product
# is for; a controller who needs the per-window linkage bound chooses strict and gives up flows.
FLOW_FICTITIOUS_RATIO = 1.0 / 1001.0
PROFILES: dict[str, dict[str, float | int]] = {
    "flow": {"fictitious_floor": 0, "fictitious_ratio": FLOW_FICTITIOUS_RATIO},
    "strict": {"fictitious_floor": 2, "fictitious_ratio": 0.5},
}


class ParamsError(ValueError):
    """A parameter file is malformed, has unknown keys or inconsistent values."""


def _encode_array(a: np.ndarray) -> dict[str, Any]:
    a32 = np.ascontiguousarray(a, dtype="<f4")
    return {"shape": list(a32.shape), "dtype": "float32",
            "b64": base64.b64encode(a32.tobytes()).decode("ascii")}


def _decode_array(d: Any) -> np.ndarray:
    if isinstance(d, np.ndarray):
        return d.astype(np.float32)
    if not isinstance(d, dict) or set(d) != {"shape", "dtype", "b64"}:
        raise ValueError("array must be an object with exactly the keys shape, dtype, b64")
    if d["dtype"] != "float32":
        raise ValueError(f"array dtype must be float32, got {d['dtype']!r}")
    raw = base64.b64decode(d["b64"], validate=True)
    arr = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    shape = tuple(int(s) for s in d["shape"])
    if int(np.prod(shape)) != arr.size:
        raise ValueError(f"array data has {arr.size} values, shape {shape} needs {int(np.prod(shape))}")
    return arr.reshape(shape)


class ReferenceStats(BaseModel):
    """Population statistics of the *native* appearance descriptor.

    Real descriptors are not isotropic (colour histograms are non-negative and
    most of their variance sits in a few directions). Random-direction hashing
    of such vectors piles most people into a few groups. Centring with the
    population mean and whitening with the population covariance makes the
    hashed vectors roughly isotropic, which is what makes the 1,000 groups fill
    equally. These are aggregate statistics of many people, not of anyone.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    input_dim: int = Field(gt=0)
    mean: np.ndarray
    # (reduced_dim, input_dim), applied as W @ (x - mean). Square for plain whitening; fewer rows
    # when calibration kept only the directions that are stable across captures of one person.
    whitening: np.ndarray
    n_samples: int = Field(ge=0, description="how many descriptors the statistics were fitted on")
    method: str = Field(default="population-whitening", pattern=r"^[a-z-]+$")

    @property
    def reduced_dim(self) -> int:
        return int(self.whitening.shape[0])

    @field_validator("mean", "whitening", mode="before")
    @classmethod
    def _arr(cls, v: Any) -> np.ndarray:
        return _decode_array(v)

    @model_validator(mode="after")
    def _shapes(self) -> "ReferenceStats":
        d = self.input_dim
        if self.mean.shape != (d,):
            raise ValueError(f"reference mean has shape {self.mean.shape}, expected ({d},)")
        if self.whitening.ndim != 2 or self.whitening.shape[1] != d or not 1 <= self.whitening.shape[0] <= d:
            raise ValueError(f"reference whitening has shape {self.whitening.shape}, expected (k, {d}) with 1 <= k <= {d}")
        if not (np.isfinite(self.mean).all() and np.isfinite(self.whitening).all()):
            raise ValueError("reference statistics contain NaN or infinity")
        return self

    def to_json_dict(self) -> dict[str, Any]:
        return {"input_dim": self.input_dim, "mean": _encode_array(self.mean),
                "whitening": _encode_array(self.whitening), "n_samples": self.n_samples, "method": self.method}


class PrivacyParams(BaseModel):
    """One immutable, versioned privacy parameter set.

    Fields are deliberately few and each is documented in docs/PRIVACY.md.
    Anything derived (the fictitious-person mean used by estimators, the
    linkage bound) is a property so it can never disagree with its inputs.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    schema_version: int = Field(default=SCHEMA_VERSION)
    version: str = Field(default=DEFAULT_VERSION, min_length=1, max_length=64,
                         pattern=r"^[A-Za-z0-9._:+-]+$")
    seed: int = Field(default=DEFAULT_SEED, ge=0, lt=2**128,
                      description="deployment seed: fixes the projection and the hash family")
    working_dim: int = Field(default=1024, ge=16, le=8192)
    n_groups: int = Field(default=1000, ge=2, le=100_000)
    noise_scale: float = Field(default=0.03, ge=0.0, le=10.0,
                               description="std of Gaussian noise per coordinate of the unit working vector")
    same_group_rate: float = Field(default=0.5, gt=0.0, le=1.0,
                                   description="measured probability that a re-capture lands in the same group")
    fictitious_floor: int = Field(default=0, ge=0, le=100,
                                  description="fictitious occurrences added to every group in every (camera, window)")
    fictitious_ratio: float = Field(default=FLOW_FICTITIOUS_RATIO, ge=0.0, lt=1.0,
                                    description="ratio r of the geometric number of extra fictitious occurrences per group")
    demographic_min_count: int = Field(default=3, ge=1, le=1000,
                                       description="demographic cells below this are pooled or suppressed")
    reference: ReferenceStats | None = None
    hash_offsets: np.ndarray | None = Field(
        default=None, description="per-group offsets fitted so groups fill equally (tied to seed and reference)")
    strata: tuple[str, ...] = Field(
        default=(), description="demographic strata (e.g. gender guesses) with their own offsets")
    stratum_offsets: np.ndarray | None = Field(
        default=None, description="(len(strata), n_groups): offsets making groups fill equally *within* each stratum")
    calibration: dict[str, float | int | str] = Field(
        default_factory=dict, description="how the figures above were obtained (for the record)")
    codebook: np.ndarray | None = Field(
        default=None, description="(n_groups, reference.reduced_dim) unit centroids of a learned quantizer, in "
                                  "coordinates rotated by the seed's secret rotation; None: the seeded hash")

    @field_validator("hash_offsets", "stratum_offsets", "codebook", mode="before")
    @classmethod
    def _offsets(cls, v: Any) -> np.ndarray | None:
        return None if v is None else _decode_array(v)

    @field_validator("schema_version")
    @classmethod
    def _schema(cls, v: int) -> int:
        if v != SCHEMA_VERSION:
            raise ValueError(f"unsupported schema_version {v}; this code reads version {SCHEMA_VERSION}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "PrivacyParams":
        if self.n_groups > self.working_dim:
            raise ValueError(f"n_groups ({self.n_groups}) cannot exceed working_dim ({self.working_dim}): "
                             "the hash uses one orthonormal direction per group")
        if self.hash_offsets is not None:
            if self.hash_offsets.shape != (self.n_groups,):
                raise ValueError(f"hash_offsets has shape {self.hash_offsets.shape}, expected ({self.n_groups},)")
            if not np.isfinite(self.hash_offsets).all():
                raise ValueError("hash_offsets contain NaN or infinity")
        if len(set(self.strata)) != len(self.strata):
            raise ValueError("strata labels must be unique")
        if self.strata and self.stratum_offsets is None:
            raise ValueError("strata given without stratum_offsets")
        if self.stratum_offsets is not None:
            if self.stratum_offsets.shape != (len(self.strata), self.n_groups):
                raise ValueError(f"stratum_offsets has shape {self.stratum_offsets.shape}, "
                                 f"expected ({len(self.strata)}, {self.n_groups})")
            if not np.isfinite(self.stratum_offsets).all():
                raise ValueError("stratum_offsets contain NaN or infinity")
        if self.codebook is not None:
            self._check_codebook()
        return self

    def _check_codebook(self) -> None:
        cb = self.codebook
        if self.reference is None:
            raise ValueError("a codebook lives in the reduced space of the reference statistics: "
                             "a parameter set with a codebook needs a reference")
        k = self.reference.reduced_dim
        if cb.shape != (self.n_groups, k):
            raise ValueError(f"codebook has shape {cb.shape}, expected (n_groups, reduced_dim) = ({self.n_groups}, {k})")
        if k > self.working_dim:
            raise ValueError(f"a codebook needs reduced_dim ({k}) <= working_dim ({self.working_dim}): "
                             "the projection must keep the whole reduced space")
        if not np.isfinite(cb).all():
            raise ValueError("codebook contains NaN or infinity")
        norms = np.linalg.norm(cb.astype(np.float64), axis=1)
        if np.any(np.abs(norms - 1.0) > 1e-3):
            raise ValueError("codebook rows must be unit vectors (centroids on the sphere)")

    # ---- derived figures used by estimators and by the documentation -------

    @property
    def fictitious_rate(self) -> float:
        """Expected fictitious occurrences per group per (camera, window).

        Flow and count estimators subtract ``n_groups * fictitious_rate`` from a
        (camera, window) total; see :attr:`fictitious_per_window`.
        """
        r = self.fictitious_ratio
        return float(self.fictitious_floor + r / (1.0 - r))

    @property
    def fictitious_per_window(self) -> float:
        """Expected fictitious occurrences per (camera, window) over all groups."""
        return self.n_groups * self.fictitious_rate

    @property
    def fictitious_variance_per_group(self) -> float:
        """Variance of the fictitious count of one group in one (camera, window) (for CIs)."""
        r = self.fictitious_ratio
        return float(r / (1.0 - r) ** 2)

    @property
    def linkage_likelihood_ratio_bound(self) -> float:
        """Upper bound on how much one window's counts can raise the odds that a person was there.

        Follows from the geometric fictitious counts: see pipeline.privacy.fictitious.
        Infinite when there are no random fictitious persons (ratio 0).
        """
        return float("inf") if self.fictitious_ratio == 0 else 1.0 / self.fictitious_ratio

    # ---- construction, persistence -----------------------------------------

    @classmethod
    def default(cls) -> "PrivacyParams":
        """Development defaults; work without any file. Not calibrated for any real descriptor."""
        return cls()

    @classmethod
    def profile(cls, name: str) -> "PrivacyParams":
        """Defaults with the fictitious-person settings of a named profile ('flow' or 'strict')."""
        if name not in PROFILES:
            raise ParamsError(f"unknown privacy profile {name!r}; choose one of {', '.join(PROFILES)}")
        return cls.default().with_changes(**PROFILES[name])

    def with_changes(self, **changes: Any) -> "PrivacyParams":
        """A validated copy with some fields replaced (the model is frozen)."""
        data = {name: getattr(self, name) for name in type(self).model_fields}
        data.update(changes)
        return PrivacyParams.model_validate(data)

    def rotated(self, version: str, seed: int | None = None) -> "PrivacyParams":
        """Same settings, new hash family: a fresh secret seed and a new version string.

        Groups from before and after a rotation are unrelated, so a rotation
        needs a new version (analyses must not match groups across it).
        """
        if version == self.version:
            raise ParamsError("a rotated parameter set needs a new version string")
        # The offsets balance the groups of *this* hash family; they are meaningless for a new one.
        # A codebook is expressed in the old seed's secret rotation and would, re-rotated, give the
        # same groups: it is dropped too; a rotated deployment fits a new one (calibrate).
        return self.with_changes(seed=secrets.randbits(127) if seed is None else seed, version=version,
                                 hash_offsets=None, strata=(), stratum_offsets=None, codebook=None)

    def to_json_dict(self) -> dict[str, Any]:
        d = self.model_dump(exclude={"reference", "hash_offsets", "stratum_offsets", "codebook"})
        d["strata"] = list(self.strata)
        d["reference"] = None if self.reference is None else self.reference.to_json_dict()
        for name in ("hash_offsets", "stratum_offsets"):
            arr = getattr(self, name)
            d[name] = None if arr is None else _encode_array(arr)
        if self.codebook is not None:  # absent otherwise: files without a codebook stay as before
            d["codebook"] = _encode_array(self.codebook)
        return d

    @property
    def quantizer(self) -> str:
        """'codebook' (learned quantizer) or 'hash' (seeded random directions): which grouping this set uses."""
        return "hash" if self.codebook is None else "codebook"

    def save(self, path: str | Path) -> None:
        """Write the parameter set as JSON (atomically: write then rename)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_json_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        tmp.replace(p)

    @classmethod
    def from_json_dict(cls, data: Any, source: str = "parameters") -> "PrivacyParams":
        if not isinstance(data, dict):
            raise ParamsError(f"{source}: top level must be a JSON object")
        unknown = sorted(set(data) - set(cls.model_fields))
        if unknown:
            raise ParamsError(f"{source}: unknown key(s) {', '.join(map(repr, unknown))}; "
                              f"allowed keys are {', '.join(sorted(cls.model_fields))}")
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise ParamsError(f"{source}: invalid privacy parameters:\n{e}") from e

    @classmethod
    def load(cls, path: str | Path) -> "PrivacyParams":
        """Read a parameter set written by :meth:`save` or by ``flowctl privacy calibrate``."""
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ParamsError(f"{p}: not valid JSON: {e}") from e
        return cls.from_json_dict(data, source=str(p))
