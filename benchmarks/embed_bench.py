"""embed against SentenceTransformer.encode on the same distinct texts, and naive per-message encoding.

Backends and numeric modes against the machine's limit: ``benchmarks/embed_backends.py``."""

from __future__ import annotations

from functools import cache
from typing import Any

import pandas as pd

from benchmarks.measure import timed
from coordset.embedding import EmbedSettings, embed_settings, embedding_table, load_model

NAIVE_SAMPLE = 1500  # messages encoded one-for-one to estimate the naive cost (extrapolated linearly)


@cache
def _model(settings: EmbedSettings) -> Any:
    return load_model(settings)


def embed_stage_seconds(messages: pd.DataFrame, params: dict[str, Any]) -> float:
    settings = embed_settings(params)
    seconds, _ = timed(lambda: embedding_table(messages, _model(settings), settings, progress=False))
    return seconds


def embed_figures(messages: pd.DataFrame, params: dict[str, Any], *, quick: bool) -> dict[str, Any]:
    settings = embed_settings(params)
    model = _model(settings)
    texts = messages.drop_duplicates("text_sha256")["text"].tolist()
    # Warm up (thread pools, allocator) so neither side of the ratio pays for the first batch.
    model.encode(texts[: settings.batch_size], batch_size=settings.batch_size, show_progress_bar=False)
    stage_s, table = timed(lambda: embedding_table(messages, model, settings, progress=False))
    raw_s, _ = timed(lambda: model.encode(texts, batch_size=settings.batch_size, normalize_embeddings=True,
                                          convert_to_numpy=True, show_progress_bar=False))
    print(f"  embed stage {stage_s:.1f} s vs encode {raw_s:.1f} s ({len(texts)} texts)", flush=True)
    sample = messages["text"].sample(n=min(NAIVE_SAMPLE // (4 if quick else 1), len(messages)), random_state=0)
    sample_s, _ = timed(lambda: model.encode(sample.tolist(), batch_size=settings.batch_size,
                                             normalize_embeddings=True, show_progress_bar=False))
    naive_s = sample_s / len(sample) * len(messages)
    print(f"  naive: {len(sample)} messages in {sample_s:.1f} s -> {naive_s:.0f} s for all {len(messages)}",
          flush=True)
    figures: dict[str, Any] = {
        "distinct_texts": len(texts), "messages": int(len(messages)), "stage_s": round(stage_s, 2),
        "encode_s": round(raw_s, 2), "ratio": round(stage_s / raw_s, 3),
        "naive_sample_messages": int(len(sample)), "naive_s_extrapolated": round(naive_s, 1),
        "dedup_speedup": round(naive_s / stage_s, 1),
    }
    return figures
