"""enrich: token usage per message, per turn and per episode, and the enrich metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from coordset.enrich.tokens import call_usage, episode_usage, load_encoding, message_tokens, optional_tokens
from coordset.params import require_int, require_str
from coordset.sources import REGISTRY


@dataclass
class TokenUsage:
    messages: pd.DataFrame
    calls: pd.DataFrame
    episodes: pd.DataFrame
    metrics: dict[str, Any]


@dataclass(frozen=True)
class EnrichSettings:
    encoding: str
    tokens_per_message: int
    tokens_per_reply: int


def enrich_settings(params: dict[str, Any]) -> EnrichSettings:
    """Read and check the ``enrich`` params (the stage builds this once, before reading any data)."""
    return EnrichSettings(require_str(params, "enrich.encoding"),
                          require_int(params, "enrich.tokens_per_message", low=0),
                          require_int(params, "enrich.tokens_per_reply", low=0))


def enrich(episodes: pd.DataFrame, messages: pd.DataFrame, settings: EnrichSettings) -> TokenUsage:
    encoding = load_encoding(settings.encoding)
    messages = messages.sort_values(["episode_id", "position"]).reset_index(drop=True)
    n_tokens = message_tokens(messages, encoding)
    reasoning = optional_tokens(messages["reasoning"], encoding)
    prompts = optional_tokens(messages["prompt"], encoding)
    billing = messages["episode_id"].map(episodes.set_index("episode_id")["billing"])
    message_table = messages[["episode_id", "turn", "position", "speaker", "role", "agent_model",
                              "text_sha256"]].assign(n_tokens=n_tokens.to_numpy(),
                                                     reasoning_tokens=reasoning.array)
    calls = call_usage(messages, n_tokens, reasoning.fillna(0), prompts, billing, encoding,
                       tokens_per_message=settings.tokens_per_message, tokens_per_reply=settings.tokens_per_reply)
    usage = episode_usage(episodes, message_table, calls)
    return TokenUsage(message_table, calls, usage, enrich_metrics(episodes, message_table, calls, usage, messages))


def _figures(episodes: pd.DataFrame, messages: pd.DataFrame, usage: pd.DataFrame) -> dict[str, int]:
    return {
        "episodes": int(len(episodes)),
        "turns": int(episodes["n_turns"].sum()),
        "messages": int(len(messages)),
        "calls": int(usage["n_calls"].sum()),
        # Each user turn is one message row per episode, so this counts it once per episode.
        "message_tokens": int(messages["n_tokens"].sum()),
        "billed_prompt_tokens": int(usage["billed_prompt_tokens"].sum()),
        "completion_tokens": int(usage["completion_tokens"].sum()),
    }


def logged_usage_error(calls: pd.DataFrame, messages: pd.DataFrame) -> dict[str, Any] | None:
    """How far our counts are from the usage the API logged for the same call (ChatDev logs every call's usage).

    Relative error = (ours - logged) / logged, per call matched to its message; median and 90th percentile
    of its absolute value, and the median signed error (positive: we count more than was billed).
    """
    logged = messages.set_index(["episode_id", "position"])[["logged_prompt_tokens", "logged_completion_tokens"]]
    joined = calls.join(logged, on=["episode_id", "position"])
    out: dict[str, Any] = {}
    for ours, theirs, name in (("billed_prompt_tokens", "logged_prompt_tokens", "prompt"),
                               ("completion_tokens", "logged_completion_tokens", "completion")):
        rows = joined[joined[theirs].notna() & (joined[theirs] > 0)]
        if rows.empty:
            continue
        rel = (rows[ours] - rows[theirs].astype("float64")) / rows[theirs].astype("float64")
        out[name] = {"calls": int(len(rows)), "median_abs_relative_error": round(float(rel.abs().median()), 6),
                     "p90_abs_relative_error": round(float(rel.abs().quantile(0.9)), 6),
                     "median_relative_error": round(float(rel.median()), 6),
                     "ours_tokens": int(rows[ours].sum()), "logged_tokens": int(rows[theirs].sum())}
    return out or None


def enrich_metrics(episodes: pd.DataFrame, messages: pd.DataFrame, calls: pd.DataFrame, usage: pd.DataFrame,
                   normalized: pd.DataFrame) -> dict[str, Any]:
    """Totals overall and per source (a DVC metric, so `dvc metrics diff` shows them)."""
    source_of = episodes.set_index("episode_id")["source"]
    metrics: dict[str, Any] = {"overall": _figures(episodes, messages, usage), "by_source": {}}
    for source in sorted(episodes["source"].unique()):
        ids = set(episodes.loc[episodes["source"] == source, "episode_id"])
        figures = _figures(episodes[episodes["source"] == source],
                           messages[messages["episode_id"].map(source_of) == source],
                           usage[usage["episode_id"].isin(ids)])
        figures["billing"] = REGISTRY[source].billing
        error = logged_usage_error(calls[calls["episode_id"].isin(ids)],
                                   normalized[normalized["episode_id"].isin(ids)])
        if error is not None:
            figures["vs_logged_usage"] = error
        metrics["by_source"][source] = figures
    return metrics
