"""One JSON line per episode in the seed report's shape, with reproducible bytes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from coordset.release.settings import ReleaseSettings
from coordset.sources import REGISTRY
from schemas.release import LLM_PREFIX

# Which latent metrics go into every record's latent_states.error: the held-out quality figures.
LATENT_ERROR_KEYS = ("error", "variance", "probe_", "heldout_")


def _scalar(value: Any) -> Any:
    """A row value as plain JSON: numpy scalars unwrapped, NaN and NA as null; lists and arrays untouched."""
    if isinstance(value, (list, dict, np.ndarray)) or value is None:
        return value
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _json_default(value: Any) -> Any:
    """What json cannot write by itself: numpy arrays and scalars.

    float32 values are written with float32's own shortest repr (``0.956323``, not ``0.9563230276107788``),
    which reads back as the same float32.
    """
    if isinstance(value, np.ndarray):
        if value.dtype == np.float32:
            return [float(str(x)) for x in value]
        return [_json_default(v) if isinstance(v, np.generic) else v for v in value.tolist()]
    if isinstance(value, np.float32):
        return float(str(value))
    if isinstance(value, np.generic):
        return _scalar(value.item())
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


@dataclass(frozen=True)
class RecordContext:
    """What every JSON line shares: the build's settings, methods and held-out latent metrics."""

    settings: ReleaseSettings
    latent_error: dict[str, Any]

    def token_method(self, billing: str) -> str:
        s = self.settings
        seen = {"own_thread": "every user turn so far and its own earlier replies",
                "shared_history": "every earlier message of the episode",
                "logged_prompt": "that call's prompt, logged or rebuilt from the log"}[billing]
        return (f"tiktoken {s.encoding}; each agent call is billed for what that agent saw ({seen}) plus "
                f"{s.tokens_per_message} tokens per message and the role, and {s.tokens_per_reply} tokens to prime "
                "the reply")

    @property
    def latent_model(self) -> str:
        return (f"recurrent coordinator ({self.settings.cell}, state width {self.settings.rank}) over "
                f"{self.settings.embed_model} message embeddings; the state after each turn's last message")

    JUDGES_METHOD = ("each judge's pairwise verdict on the last turn it judged, asked in both agent orders; a "
                     "verdict counts only if both orders agree; consensus = plurality of the consistent verdicts "
                     "(top count shared: tie; none: unknown)")
    RULES_METHOD = ("rules keyed to params.yaml thresholds (coordset/labels/rules.py): outcome from the judges' mean "
                    "1-10 grades, success = a named winner and coordination_overhead below its threshold, agreement "
                    "from the cosine similarity of the agents' reply embeddings")

    @property
    def llm_method(self) -> str:
        models = ", ".join(self.settings.llm_models or ())
        return (f"{models} through an OpenAI-compatible endpoint with a structured answer: head-to-head episodes "
                "asked in both agent orders (consistent iff both orders prefer the same model or both tie), "
                "conversations among agents judged once as a whole with the failure attributed to an agent and a "
                "step; several models are combined by majority (coordset/labels/llm.py, llm_consensus.py)")


def latent_error_metrics(latent_metrics: dict[str, Any]) -> dict[str, Any]:
    """The held-out quality figures of metrics/latent.json (whatever of them the file has)."""
    return {k: v for k, v in sorted(latent_metrics.items()) if any(part in k for part in LATENT_ERROR_KEYS)}


def episode_record(row: dict[str, Any], ctx: RecordContext) -> dict[str, Any]:
    """One JSON line: input, context (agents, responses, tokens, latent states, outcomes), output, metadata."""
    row = {k: _scalar(v) for k, v in row.items()}
    agents = list(row["agents"])
    source = REGISTRY[row["source"]]
    thresholds = ctx.settings.thresholds
    grades = row["agent_grades"]
    llm_fields = {k[len(LLM_PREFIX):]: v for k, v in row.items() if k.startswith(LLM_PREFIX)}
    record = {
        "input": [m["text"] for m in row["messages"] if m["role"] == "user"],
        "context": {
            "agents": agents,
            "agent_models": list(row["agent_models"]),
            "messages": row["messages"],
            "responses": {agent: [m["text"] for m in row["messages"] if m["speaker"] == agent] for agent in agents},
            # A head-to-head source's outcome names the winning agent; elsewhere there is no winner.
            "winner": row["consensus"] if row["parallel"] else None,
            "token_usage": {
                "method": ctx.token_method(row["billing"]),
                "per_call": row["token_usage_per_call"],
                "totals": {
                    **{k: row[k] for k in ("user_tokens", "completion_tokens", "billed_prompt_tokens",
                                           "input_tokens", "output_tokens", "total_tokens")},
                    "completion_tokens_by_agent": dict(zip(agents, row["completion_tokens_by_agent"], strict=True)),
                },
                "communication_efficiency": {k: row[k] for k in ("avg_tokens_per_turn", "input_output_ratio",
                                                                 "coordination_overhead")},
            },
            "latent_states": {
                "method": ctx.settings.cell,
                "model": ctx.latent_model,
                "rank": ctx.settings.rank,
                "split": row["latent_split"],
                "per_turn": [{"turn": t + 1, "vector": v} for t, v in enumerate(row["latent_per_turn"])],
                "error": ctx.latent_error,
            },
            "coordination_outcomes": {
                "native": {
                    "outcome": row["consensus"],
                    "outcome_source": row["consensus_source"],
                    **{k: row[k] for k in ("unknown_reason", "mistake_agent", "mistake_step", "mistake_reason",
                                           "any_deal_passed")},
                    "turn_events": row["turn_events"],
                },
                "judges": {
                    "method": RecordContext.JUDGES_METHOD,
                    "verdicts": row["judge_verdicts"],
                    "consensus": row["consensus"],
                    "consensus_category": row["consensus_category"],
                    "consensus_source": row["consensus_source"],
                    "n_judges": row["n_judges"],
                    "n_consistent_judges": row["n_consistent_judges"],
                },
                "rule": {
                    "method": RecordContext.RULES_METHOD,
                    "thresholds": {
                        "coordination_overhead": thresholds.coordination_overhead,
                        "agreement_low": thresholds.agreement_low,
                        "agreement_high": thresholds.agreement_high,
                        "agreement_drop": thresholds.agreement_drop,
                        "length_ratio": thresholds.length_ratio,
                    },
                    "coordination_success": row["coordination_success"],
                    "coordination_overhead": row["coordination_overhead"],
                    "rule_outcome": row["rule_outcome"],
                    "rule_outcome_category": row["rule_outcome_category"],
                    "agent_grades": None if grades is None else dict(zip(agents, grades, strict=True)),
                    "mean_grade": row["mean_grade"],
                    "efficiency_score": row["efficiency_score"],
                    "mean_agent_similarity": row["mean_agent_similarity"],
                    "per_turn": [{"turn": t + 1, "agent_similarity": s, "agreement_level": level}
                                 for t, (s, level) in enumerate(zip(row["agent_similarity_per_turn"],
                                                                    row["agreement_level_per_turn"], strict=True))],
                    "events": row["events"],
                },
                "llm": ({"method": ctx.llm_method, "configured_models": list(ctx.settings.llm_models or ()),
                         **llm_fields}
                        if ctx.settings.llm_enabled else None),
            },
        },
        "output": {
            "outcome": row["consensus"],
            "outcome_category": row["consensus_category"],
            "outcome_source": row["consensus_source"],
            "coordination_success": row["coordination_success"],
        },
        "metadata": {
            "episode_id": row["episode_id"],
            "source": row["source"],
            "licence": source.licence,
            "annotation_version": ctx.settings.annotation_version,
            "date": row["date"],
            "group_id": row["group_id"],
            "category": row["category"],
            "subset": row["subset"],
            "language": row["language"],
        },
    }
    return record


def json_line(record: dict[str, Any]) -> str:
    """One line of reproducible JSON: sorted keys, no spaces, UTF-8 text, no NaN."""
    return json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False,
                      default=_json_default) + "\n"


