"""Simulated people and their appearance descriptors (HSV colour histograms) with ground truth.

Why this model: the production descriptor (for now) is a pair of HSV colour
histograms (upper and lower body). The simulated descriptor has exactly the layout of
``pipeline.vision.descriptor`` (HSV 8x4x4 histograms of head/shoulders, torso
and legs, each L1-normalised, the whole L2-normalised: 384 numbers). The
evaluation must use descriptors with the same awkward properties - non-negative, sparse, strongly anisotropic,
demographics correlated with appearance, and capture-to-capture variation from
lighting, white balance, pose/background and resolution - or its figures would
say nothing about real footage.

Stated assumptions (all in :class:`AppearanceModel`, none tuned to the privacy
targets; the evaluation prints the resulting raw re-identification quality so
a reader can judge them):

* Each person wears an upper and a lower garment, each a main colour plus an
  optional second colour (pattern); skin/hair fills 40-70 % of the head part and
  a little of the torso part.
* Gender shifts garment hue/saturation preferences; age lowers saturation and
  brightness. These correlations are moderate, so a linear classifier on the
  clean descriptor predicts gender clearly better than chance (printed).
* Each camera has its own illumination gain, white balance and background; each
  capture jitters them, changes the background share (pose/occlusion) and
  samples a finite number of pixels (resolution).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.privacy.demographics import AGE_BANDS

__all__ = ["AppearanceModel", "People", "Cameras", "GENDER_NAMES"]

GENDER_NAMES = ("female", "male")
# Visitor age mix of a shopping centre (adults), by band, roughly flat then falling.
_AGE_MIX = np.array([0.18, 0.20, 0.18, 0.16, 0.13, 0.10, 0.05])


def _norm_cdf(x: np.ndarray) -> np.ndarray:
    # math.erf vectorised without scipy
    return 0.5 * (1.0 + _erf(x / np.sqrt(2.0)))


def _erf(x: np.ndarray) -> np.ndarray:
    # Abramowitz-Stegun 7.1.26, |error| < 1.5e-7: ample for bin probabilities.
    s = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496735) * t
               + 0.254829592) * t * np.exp(-a * a)
    return s * y


def _bin_probs(mu: np.ndarray, sd: np.ndarray, edges: np.ndarray, circular: bool) -> np.ndarray:
    """P(value in bin) for N(mu, sd) per row; circular wraps on [0, 1). Shapes (..., 1) -> (..., n_bins)."""
    if circular:
        total = 0.0
        for shift in (-1.0, 0.0, 1.0):
            c = _norm_cdf((edges - (mu + shift)) / sd)
            total = total + (c[..., 1:] - c[..., :-1])
        return total
    c = _norm_cdf((edges - mu) / sd)
    p = c[..., 1:] - c[..., :-1]
    # Clip mass outside [0, 1] into the end bins (saturation/brightness are clipped by the sensor).
    p[..., 0] += c[..., 0]
    p[..., -1] += 1.0 - c[..., -1]
    return p


@dataclass(frozen=True)
class People:
    """Ground truth for simulated identities (never produced by the real pipeline)."""

    gender: np.ndarray        # (n,) int: 0 female, 1 male
    age_band: np.ndarray      # (n,) int index into AGE_BANDS
    colours: np.ndarray       # (n, 5, 3): upper main, upper 2nd, lower main, lower 2nd, skin (h, s, v)
    second_weight: np.ndarray  # (n, 2): share of the second colour in upper/lower garment

    def __len__(self) -> int:
        return int(self.gender.shape[0])

    def subset(self, idx: np.ndarray) -> "People":
        return People(self.gender[idx], self.age_band[idx], self.colours[idx], self.second_weight[idx])


@dataclass(frozen=True)
class Cameras:
    """Per-camera capture conditions."""

    gain: np.ndarray          # (c,) brightness multiplier
    hue_shift: np.ndarray     # (c,) white-balance hue shift
    sat_scale: np.ndarray     # (c,)
    background: np.ndarray    # (c, 3) background colour (h, s, v)

    def __len__(self) -> int:
        return int(self.gain.shape[0])


@dataclass
class AppearanceModel:
    """Generates people, cameras and per-capture HSV histogram descriptors."""

    hue_bins: int = 8
    sat_bins: int = 4
    val_bins: int = 4
    # capture variation
    gain_camera_sd: float = 0.15      # log-sd of camera brightness gain
    gain_capture_sd: float = 0.08     # log-sd of per-capture brightness jitter
    hue_camera_sd: float = 0.02       # camera white balance, fraction of the hue circle
    hue_capture_sd: float = 0.01
    background_share: tuple[float, float] = (0.15, 0.45)  # per-capture uniform range
    pixels: tuple[int, int] = (800, 8000)  # pixels per person crop, log-uniform (distance to camera)
    colour_texture_sd: tuple[float, float, float] = (0.03, 0.08, 0.08)  # spread of one garment colour
    # demographic correlation strength (0 = none); see _draw_colour
    demographic_effect: float = 1.0
    _edges: dict = field(default_factory=dict, repr=False)

    @property
    def dim(self) -> int:
        return 3 * self.hue_bins * self.sat_bins * self.val_bins

    # ---------------------------------------------------------------- people

    def people(self, n: int, rng: np.random.Generator, gender: np.ndarray | None = None,
               age: np.ndarray | None = None) -> People:
        """``n`` people; their genders (0 female, 1 male) and age-band indices are drawn unless given."""
        gender = rng.integers(0, 2, size=n) if gender is None else np.asarray(gender, dtype=np.int64)
        age = (rng.choice(len(AGE_BANDS), size=n, p=_AGE_MIX / _AGE_MIX.sum()) if age is None
               else np.asarray(age, dtype=np.int64))
        if gender.shape != (n,) or age.shape != (n,):
            raise ValueError(f"gender and age must have shape ({n},)")
        cols = np.zeros((n, 5, 3))
        for part in range(4):
            cols[:, part] = self._draw_colour(gender, age, rng, lower=part >= 2)
        # skin/hair: low saturation-ish warm hues, varied brightness
        cols[:, 4, 0] = rng.normal(0.06, 0.02, n) % 1.0
        cols[:, 4, 1] = np.clip(rng.normal(0.40, 0.12, n), 0, 1)
        cols[:, 4, 2] = np.clip(rng.normal(0.55, 0.20, n), 0.05, 1)
        second = np.where(rng.random((n, 2)) < 0.4, rng.uniform(0.1, 0.45, (n, 2)), 0.0)
        return People(gender, age, cols, second)

    def _draw_colour(self, gender: np.ndarray, age: np.ndarray, rng: np.random.Generator,
                     lower: bool) -> np.ndarray:
        """Garment colour (h, s, v). Effects: women more warm/saturated hues, older people darker and duller."""
        n = gender.shape[0]
        e = self.demographic_effect
        female = gender == 0
        # hue families: red/pink (0.95), orange/yellow (0.1), green (0.33), blue (0.6), purple (0.78)
        centres = np.array([0.97, 0.10, 0.33, 0.60, 0.78])
        base = np.array([0.20, 0.15, 0.15, 0.35, 0.15]) if not lower else np.array([0.10, 0.10, 0.10, 0.55, 0.15])
        tilt = np.array([0.12, 0.03, -0.05, -0.15, 0.05]) * e
        p_f = np.clip(base + tilt, 0.01, None)
        p_m = np.clip(base - tilt, 0.01, None)
        fam = np.where(female, _choice_rows(p_f / p_f.sum(), n, rng), _choice_rows(p_m / p_m.sum(), n, rng))
        h = (centres[fam] + rng.normal(0, 0.04, n)) % 1.0
        age_frac = age / (len(AGE_BANDS) - 1)
        s = np.clip(rng.beta(2.0, 2.0, n) + e * (0.08 * female - 0.15 * age_frac + 0.05), 0.0, 1.0)
        # many garments are black/white/grey: low saturation, extreme value
        neutral = rng.random(n) < (0.35 + 0.1 * e * (age_frac - 0.5) - 0.05 * e * female)
        s = np.where(neutral, rng.uniform(0.0, 0.12, n), s)
        v = np.clip(rng.beta(2.2, 2.0, n) - e * 0.12 * age_frac + 0.05, 0.03, 1.0)
        v = np.where(neutral, rng.choice([0.1, 0.5, 0.92], n) + rng.normal(0, 0.05, n), v)
        return np.stack([h, s, np.clip(v, 0.02, 1.0)], axis=1)

    # ---------------------------------------------------------------- cameras

    def cameras(self, n: int, rng: np.random.Generator) -> Cameras:
        bg = np.stack([rng.random(n), rng.uniform(0.0, 0.3, n), rng.uniform(0.3, 0.8, n)], axis=1)
        return Cameras(gain=np.exp(rng.normal(0, self.gain_camera_sd, n)),
                       hue_shift=rng.normal(0, self.hue_camera_sd, n),
                       sat_scale=np.exp(rng.normal(0, 0.08, n)), background=bg)

    # ---------------------------------------------------------------- captures

    def _edges_for(self, bins: int) -> np.ndarray:
        if bins not in self._edges:
            self._edges[bins] = np.linspace(0.0, 1.0, bins + 1)
        return self._edges[bins]

    def _hist(self, hsv: np.ndarray, sd: np.ndarray) -> np.ndarray:
        """Expected normalised HSV histogram of one Gaussian colour blob per row: (m, 3) -> (m, H*S*V)."""
        ph = _bin_probs(hsv[:, :1], sd[:, :1], self._edges_for(self.hue_bins), circular=True)
        ps = _bin_probs(hsv[:, 1:2], sd[:, 1:2], self._edges_for(self.sat_bins), circular=False)
        pv = _bin_probs(hsv[:, 2:3], sd[:, 2:3], self._edges_for(self.val_bins), circular=False)
        return (ph[:, :, None, None] * ps[:, None, :, None] * pv[:, None, None, :]).reshape(hsv.shape[0], -1)

    def capture(self, people: People, camera: np.ndarray, cams: Cameras, rng: np.random.Generator,
                clear: bool = False) -> np.ndarray:
        """Descriptors (m, dim) float32 for captures of ``people`` (m rows) by cameras ``camera`` (m,).

        ``clear=True`` gives a noiseless, neutrally lit capture (an adversary's "clear photo").
        """
        m = len(people)
        tex = np.broadcast_to(np.array(self.colour_texture_sd), (m, 3))
        if clear:
            gain = np.ones(m)
            hue = np.zeros(m)
            sat = np.ones(m)
            bg_share = np.zeros(m)
        else:
            gain = cams.gain[camera] * np.exp(rng.normal(0, self.gain_capture_sd, m))
            hue = cams.hue_shift[camera] + rng.normal(0, self.hue_capture_sd, m)
            sat = cams.sat_scale[camera]
            bg_share = rng.uniform(*self.background_share, m)

        def lit(c: np.ndarray) -> np.ndarray:
            return np.stack([(c[:, 0] + hue) % 1.0, np.clip(c[:, 1] * sat, 0, 1), np.clip(c[:, 2] * gain, 0, 1)], axis=1)

        def garment(part: int) -> np.ndarray:
            main, second = (0, 1) if part == 0 else (2, 3)
            w2 = people.second_weight[:, part][:, None]
            return ((1 - w2) * self._hist(lit(people.colours[:, main]), tex)
                    + w2 * self._hist(lit(people.colours[:, second]), tex))

        skin = self._hist(lit(people.colours[:, 4]), tex)
        upper, lower = garment(0), garment(1)
        # The three body parts of pipeline.vision.descriptor: head/shoulders, torso, legs.
        head_skin = np.full((m, 1), 0.55) if clear else rng.uniform(0.4, 0.7, m)[:, None]
        arm_skin = np.full((m, 1), 0.1) if clear else rng.uniform(0.03, 0.2, m)[:, None]
        parts = [head_skin * skin + (1 - head_skin) * upper, arm_skin * skin + (1 - arm_skin) * upper, lower]
        if not clear:
            bg = self._hist(lit(cams.background[camera]), np.broadcast_to(np.array([0.08, 0.15, 0.15]), (m, 3)))
            npx_all = np.exp(rng.uniform(np.log(self.pixels[0]), np.log(self.pixels[1]), m))
            for i, share_of_crop in enumerate((0.2, 0.35, 0.45)):
                h = (1 - bg_share[:, None]) * parts[i] + bg_share[:, None] * bg
                npx = npx_all[:, None] * share_of_crop
                parts[i] = rng.poisson(h * npx) / npx
        parts = [h / np.maximum(h.sum(axis=1, keepdims=True), 1e-12) for h in parts]
        v = np.concatenate(parts, axis=1)
        # Like the production descriptor: each part L1-normalised, the whole vector L2-normalised.
        v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        return v.astype(np.float32)


def _choice_rows(p: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.choice(p.shape[0], size=n, p=p)
