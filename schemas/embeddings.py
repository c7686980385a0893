"""The embed stage's table: one normalized vector per distinct message text."""

from __future__ import annotations

import numpy as np
import pandera.pandas as pa
from pandera.pandas import Check, Column

from schemas.normalized import SHA256


def _unit_vectors(values: object) -> bool:
    matrix = np.stack(list(values)) if len(values) else np.zeros((0, 1))
    same_dim = len({len(v) for v in values}) <= 1
    return bool(same_dim and np.isfinite(matrix).all() and np.allclose(np.linalg.norm(matrix, axis=1), 1, atol=1e-3))


EMBEDDINGS = pa.DataFrameSchema(
    name="embeddings",
    columns={
        "text_sha256": Column(str, [SHA256], unique=True),
        "embedding": Column(object, Check(_unit_vectors, element_wise=False,
                                          error="embeddings share one dimension, are finite and unit length")),
        "n_wordpieces": Column(int, Check.ge(0)),
        "n_chunks": Column(int, Check.ge(1)),
        "truncated": Column(bool),
        "long_text_method": Column(str, Check.isin(["truncate", "chunk_mean"])),
    },
    checks=[Check(lambda df: df["text_sha256"].is_monotonic_increasing, element_wise=False,
                  error="rows sorted by text_sha256")],
    strict=True,
)
