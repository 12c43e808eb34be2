"""Person descriptor -> group id: the one step that turns personal data into an occurrence.

Why a class: the seeded projection and hash family are built once per
(parameter set, descriptor size) and reused for every frame; the noise is
fresh for every call. Nothing returned or logged here contains a descriptor,
a working vector or any per-person value: only group ids leave.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from pipeline.privacy.lsh import GroupHash
from pipeline.privacy.noise import add_noise
from pipeline.privacy.params import PrivacyParams
from pipeline.privacy.projection import Projector, validate_embeddings

__all__ = ["Anonymizer"]

log = logging.getLogger(__name__)


class Anonymizer:
    """Assigns appearance descriptors to one of ``params.n_groups`` groups.

    Pipeline per descriptor: centre + whiten (reference statistics) -> seeded
    projection to ``params.working_dim`` -> unit norm -> add Gaussian noise of
    scale ``params.noise_scale`` from fresh OS entropy -> seeded LSH.
    """

    def __init__(self, params: PrivacyParams, input_dim: int) -> None:
        self.params = params
        self.input_dim = int(input_dim)
        self._project = Projector(params, self.input_dim)
        self._hash = GroupHash(params, self._project.matrix, self._project.signal_rank)
        log.info("anonymizer ready: params %s, input_dim %d, working_dim %d, %d groups",
                 params.version, self.input_dim, params.working_dim, params.n_groups)

    @property
    def version(self) -> str:
        """The parameter-set version to record with every output produced by this anonymizer."""
        return self.params.version

    def working_vectors(self, embeddings: np.ndarray) -> np.ndarray:
        """Noise-free unit working vectors. For calibration and evaluation only, never for output."""
        return self._project(validate_embeddings(embeddings, self.input_dim))

    def stratum_rows(self, strata: Sequence[str | None] | np.ndarray | None, n: int) -> np.ndarray | None:
        """Offset-table row per descriptor: 0 for None/"unknown"/unlisted labels, s + 1 for stratum s."""
        if strata is None:
            return None
        labels = list(strata)
        if len(labels) != n:
            raise ValueError(f"strata has {len(labels)} labels for {n} embeddings")
        index = {name: i + 1 for i, name in enumerate(self.params.strata)}
        return np.array([index.get(lab, 0) if isinstance(lab, str) else 0 for lab in labels], dtype=np.int64)

    def groups_of_working(self, working: np.ndarray, rng: np.random.Generator | None = None,
                          offset_rows: np.ndarray | None = None) -> np.ndarray:
        """Add noise to unit working vectors and hash them.

        ``rng`` exists only so that simulations can be repeated; production
        code calls :meth:`assign_groups`, whose noise always comes from OS entropy.
        """
        return self._hash(add_noise(working, self.params.noise_scale, rng), offset_rows)

    def assign_groups(self, embeddings: np.ndarray,
                      strata: Sequence[str | None] | np.ndarray | None = None) -> np.ndarray:
        """Group id in ``[0, n_groups)`` for each row of ``embeddings`` (shape (n, input_dim)).

        ``strata`` (optional, one label per row): the demographic model's guess
        for the same crop (e.g. "female"/"male"), when the parameter set has
        strata (``params.strata``). It is used only to pick the group-balancing
        offsets that keep group ids from revealing that guess; ``None``,
        "unknown" or an unlisted label uses the pooled offsets.

        Raises ValueError for a wrong shape, a non-numeric dtype or NaN/inf.
        """
        x = validate_embeddings(embeddings, self.input_dim)
        if x.shape[0] == 0:
            return np.zeros(0, dtype=np.int64)
        return self.groups_of_working(self._project(x), offset_rows=self.stratum_rows(strata, x.shape[0]))
