"""One function per benchmarked figure; each times the stage's code and the raw library side by side."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.measure import timed
from coordset.enrich.tokens import load_encoding
from coordset.enrich.usage import enrich, enrich_settings

SCALE_FRACTIONS = (0.125, 0.25, 0.5, 1.0)


def _by_questions(episodes: pd.DataFrame, messages: pd.DataFrame, fraction: float
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A slice by question, so episodes and distinct texts both shrink in proportion."""
    questions = sorted(episodes["group_id"].unique(), key=lambda q: (len(q), q))
    keep = set(questions[: max(1, round(len(questions) * fraction))])
    sub = episodes[episodes["group_id"].isin(keep)]
    return sub, messages[messages["episode_id"].isin(set(sub["episode_id"]))]


def enrich_vs_tiktoken(episodes: pd.DataFrame, messages: pd.DataFrame, params: dict[str, Any]) -> dict[str, Any]:
    """The whole enrich computation vs tiktoken's own batch encoding of the same distinct texts."""
    encoding = load_encoding(params["enrich"]["encoding"])
    texts = messages.drop_duplicates("text_sha256")["text"].tolist()
    raw_s, _ = timed(lambda: encoding.encode_ordinary_batch(texts), repeat=3)
    stage_s, _ = timed(lambda: enrich(episodes, messages, enrich_settings(params)), repeat=3)
    print(f"  enrich {stage_s:.2f} s vs tiktoken {raw_s:.2f} s", flush=True)
    return {"stage_s": round(stage_s, 3), "tiktoken_batch_s": round(raw_s, 3),
            "ratio": round(stage_s / raw_s, 2), "distinct_texts": len(texts)}


def embed_vs_sentence_transformers(messages: pd.DataFrame, params: dict[str, Any], *, quick: bool
                                   ) -> dict[str, Any]:
    from benchmarks.embed_bench import embed_figures

    return embed_figures(messages, params, quick=quick)


def scaling(episodes: pd.DataFrame, messages: pd.DataFrame, params: dict[str, Any], *, full_embed_s: float
            ) -> list[dict[str, Any]]:
    """enrich and embed on growing slices; the full set's embed time is the one measured already."""
    from benchmarks.embed_bench import embed_stage_seconds

    rows = []
    for fraction in SCALE_FRACTIONS:
        sub_e, sub_m = _by_questions(episodes, messages, fraction)
        enrich_s, _ = timed(lambda e=sub_e, m=sub_m: enrich(e, m, enrich_settings(params)), repeat=2)
        embed_s = full_embed_s if fraction == 1.0 else embed_stage_seconds(sub_m, params)
        rows.append({"fraction": fraction, "episodes": int(len(sub_e)),
                     "distinct_texts": int(sub_m["text_sha256"].nunique()),
                     "enrich_s": round(enrich_s, 3), "embed_s": round(embed_s, 3)})
        print(f"  {fraction:>5}: {len(sub_e)} episodes, enrich {enrich_s:.2f} s, embed {embed_s:.1f} s", flush=True)
    full = rows[-1]
    for row in rows:
        # Cost per unit of work relative to the full set: 1.0 everywhere means linear growth.
        row["enrich_per_episode_vs_full"] = round((row["enrich_s"] / row["episodes"])
                                                  / (full["enrich_s"] / full["episodes"]), 2)
        row["embed_per_text_vs_full"] = round((row["embed_s"] / row["distinct_texts"])
                                              / (full["embed_s"] / full["distinct_texts"]), 2)
    return rows


def llm_throughput(episodes: pd.DataFrame, messages: pd.DataFrame, params: dict[str, Any], *, quick: bool
                   ) -> dict[str, Any]:
    """LLM labeling against the local OpenAI-compatible server with 200 ms latency a call."""
    import os

    from coordset.labels.llm import LlmSettings, label_with_llm
    from testkit.openai_server import serve_openai

    n_episodes = 8 if quick else 40
    subset = episodes.sort_values("episode_id").head(n_episodes)
    sub_messages = messages[messages["episode_id"].isin(set(subset["episode_id"]))]
    figures: dict[str, Any] = {"episodes": n_episodes, "requests": 2 * n_episodes, "latency_s": 0.2}
    saved = {k: os.environ.get(k) for k in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    try:
        with serve_openai(lifetime_s=600, latency_s=0.2) as server:
            os.environ["OPENAI_API_KEY"] = "sk-benchmark-not-a-real-key"
            os.environ["OPENAI_BASE_URL"] = server.base_url
            for name, concurrency in (("sequential", 1), ("concurrent_16", 16)):
                settings = LlmSettings(enabled=True, concurrency=concurrency, max_calls=10_000)
                with tempfile.TemporaryDirectory() as cache:
                    before = server.call_count
                    seconds, result = timed(lambda s=settings, c=cache: label_with_llm(
                        subset, sub_messages, model="bench-model", settings=s, cache_dir=Path(c)))
                    figures[f"{name}_s"] = round(seconds, 2)
                    figures[f"{name}_calls"] = server.call_count - before
                    if name == "concurrent_16":
                        before = server.call_count
                        warm_s, _ = timed(lambda s=settings, c=cache: label_with_llm(
                            subset, sub_messages, model="bench-model", settings=s, cache_dir=Path(c)))
                        figures["warm_cache_calls"] = server.call_count - before
                        figures["warm_cache_s"] = round(warm_s, 3)
                    figures[f"{name}_valid_episodes"] = result.stats.valid_episodes
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    figures["speedup"] = round(figures["sequential_s"] / figures["concurrent_16_s"], 1)
    print(f"  sequential {figures['sequential_s']} s, 16 at once {figures['concurrent_16_s']} s, "
          f"warm re-run {figures['warm_cache_calls']} calls", flush=True)
    return figures


def cosine_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest row-wise cosine similarity between two embedding matrices."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())
