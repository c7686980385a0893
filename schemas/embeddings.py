"""The embed stage's table: one normalized vector per distinct message text."""

from __future__ import annotations

import numpy as np
import pandera.pandas as pa
from pandera.pandas import Check, Column

from schemas.normalized import SHA256


def _unit_vectors(values: object) -> bool:
    """One shared dimension, float32, finite and of unit length (normalize_embeddings=True)."""
    vectors = [np.asarray(v) for v in values]
    if not vectors:
        return True
    if len({v.shape for v in vectors}) != 1 or vectors[0].ndim != 1:
        return False
    matrix = np.stack(vectors)
    unit = np.allclose(np.linalg.norm(matrix, axis=1), 1, atol=1e-3)
    return bool(matrix.dtype == np.float32 and np.isfinite(matrix).all() and unit)


EMBEDDINGS = pa.DataFrameSchema(
    name="embeddings",
    columns={
        "text_sha256": Column(str, [SHA256], unique=True),
        "embedding": Column(object, Check(
            _unit_vectors, element_wise=False,
            error="embeddings share one dimension and are float32, finite and of unit length")),
        "n_wordpieces": Column(int, Check.ge(0)),
        "n_chunks": Column(int, Check.ge(1)),
        "truncated": Column(bool),
        "long_text_method": Column(str, Check.isin(["truncate", "chunk_mean"])),
    },
    checks=[Check(lambda df: df["text_sha256"].is_monotonic_increasing, element_wise=False,
                  error="rows sorted by text_sha256")],
    strict=True,
)
