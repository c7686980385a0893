"""enrich: token usage per message, per turn and per episode, and the enrich metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from coordset.params import require_int, require_str
from coordset.tokens import episode_usage, load_encoding, message_tokens, turn_usage


@dataclass
class TokenUsage:
    messages: pd.DataFrame
    turns: pd.DataFrame
    episodes: pd.DataFrame
    metrics: dict[str, Any]


@dataclass(frozen=True)
class EnrichSettings:
    encoding: str
    tokens_per_message: int
    tokens_per_reply: int


def enrich_settings(params: dict[str, Any]) -> EnrichSettings:
    """Read and check the ``enrich`` params (the stage calls this before reading any data)."""
    return EnrichSettings(require_str(params, "enrich.encoding"),
                          require_int(params, "enrich.tokens_per_message", low=0),
                          require_int(params, "enrich.tokens_per_reply", low=0))


def enrich(episodes: pd.DataFrame, messages: pd.DataFrame, params: dict[str, Any]) -> TokenUsage:
    settings = enrich_settings(params)
    per_message, per_reply = settings.tokens_per_message, settings.tokens_per_reply
    encoding = load_encoding(settings.encoding)
    n_tokens = message_tokens(messages, encoding)
    message_table = messages[["episode_id", "turn", "position", "role", "agent_model", "text_sha256"]].assign(
        n_tokens=n_tokens.values)
    turns = turn_usage(messages, n_tokens, encoding, tokens_per_message=per_message, tokens_per_reply=per_reply)
    usage = episode_usage(episodes, turns)
    return TokenUsage(message_table, turns, usage, enrich_metrics(episodes, message_table, usage))


def _figures(episodes: pd.DataFrame, messages: pd.DataFrame, usage: pd.DataFrame) -> dict[str, int]:
    return {
        "episodes": int(len(episodes)),
        "turns": int(episodes["n_turns"].sum()),
        "messages": int(len(messages)),
        # Each user turn is one message row per episode, so this counts it once per episode.
        "message_tokens": int(messages["n_tokens"].sum()),
        "billed_prompt_tokens": int(usage["billed_prompt_tokens"].sum()),
        "completion_tokens": int(usage["completion_tokens"].sum()),
    }


def enrich_metrics(episodes: pd.DataFrame, messages: pd.DataFrame, usage: pd.DataFrame) -> dict[str, Any]:
    """Totals overall and per source (a DVC metric, so `dvc metrics diff` shows them)."""
    source_of = episodes.set_index("episode_id")["source"]
    metrics: dict[str, Any] = {"overall": _figures(episodes, messages, usage), "by_source": {}}
    for source in sorted(episodes["source"].unique()):
        ids = set(episodes.loc[episodes["source"] == source, "episode_id"])
        metrics["by_source"][source] = _figures(
            episodes[episodes["source"] == source],
            messages[messages["episode_id"].map(source_of) == source],
            usage[usage["episode_id"].isin(ids)],
        )
    return metrics
