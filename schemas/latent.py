"""The latent stage's table: one state vector per episode and turn."""

from __future__ import annotations

import numpy as np
import pandera.pandas as pa
from pandera.pandas import Check, Column


def latent_states(rank: int) -> pa.DataFrameSchema:
    """Schema for a build at ``rank``: every vector has exactly ``rank`` finite float32 values."""
    return pa.DataFrameSchema(
        name="latent_states",
        columns={
            "episode_id": Column(str),
            "turn": Column(int, Check.ge(1)),
            "split": Column(str, Check.isin(["train", "heldout"])),
            "latent": Column(object, Check(
                lambda v: isinstance(v, np.ndarray) and v.dtype == np.float32 and v.shape == (rank,)
                and bool(np.isfinite(v).all()),
                element_wise=True, error=f"latent is {rank} finite float32 values")),
        },
        checks=[
            Check(lambda df: ~df.duplicated(["episode_id", "turn"]), error="one row per (episode_id, turn)"),
            Check(lambda df: df.groupby("episode_id")["split"].nunique() == 1, element_wise=False,
                  error="an episode has one split"),
        ],
        strict=True,
    )
