"""The published dataset (data/release/coordset.parquet): one row per episode.

``FIELDS`` is the one table of the release's columns: name, Arrow type and meaning. The Parquet file's
Arrow schema, the Pandera schema below and the dataset card's field list and ``dataset_info.features``
are all generated from it, so they cannot drift apart. Columns of the opt-in LLM labeler are carried
over from ``episode_labels`` with their ``llm_`` prefix; ``LLM_DESCRIPTIONS`` describes the known ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow
from pandera.pandas import Check, Column

from schemas.labels import CATEGORY, COSINE
from schemas.normalized import EPISODES

AGREEMENT_LEVELS = ("low", "medium", "high", "unknown")
EVENTS = ("agreement_drop", "length_imbalance")
LLM_PREFIX = "llm_"

_str, _int, _float, _bool = pyarrow.string(), pyarrow.int64(), pyarrow.float64(), pyarrow.bool_()

TOKEN_ROW = pyarrow.struct([
    ("turn", _int), ("agent", _str), ("user_tokens", _int), ("completion_tokens", _int),
    ("billed_prompt_tokens", _int),
])
JUDGE_ROW = pyarrow.struct([
    ("judge", _str), ("judge_id", _str), ("turn", _int), ("model_a", _str), ("model_b", _str),
    ("winner_ab", _str), ("winner_ba", _str), ("verdict", _str), ("verdict_category", _str),
])
EVENT_ROW = pyarrow.struct([("turn", _int), ("event", _str)])


@dataclass(frozen=True)
class Field:
    name: str
    type: pyarrow.DataType
    group: str  # the card's section for it
    description: str


FIELDS: tuple[Field, ...] = (
    # The episode.
    Field("episode_id", _str, "episode", "Unique id: `<source>/<language>/<question_id>/<model>__<model>` for the "
          "MT-Bench sources; rows are sorted by it."),
    Field("source", _str, "episode", "Where the episode comes from: `mt_bench_repro`, `fastchat_mt_bench`, "
          "`chatbot_arena` or `local` (see Sources)."),
    Field("question_id", _str, "episode", "The question (conversation) id in the source; every model pair of a "
          "question shares it."),
    Field("category", _str, "episode", "The source's question category (MT-Bench: writing, roleplay, reasoning, "
          "math, coding, extraction, stem, humanities); null where the source has none."),
    Field("language", _str, "episode", "Language of the conversation as the source gives it (`en` for MT-Bench)."),
    Field("date", _str, "episode", "UTC date (YYYY-MM-DD) of the episode's latest timestamp in the source data "
          "(`tstamp_end`, else `tstamp_start`); null when the source has no timestamps. Never the build date."),
    Field("agent_models", pyarrow.list_(_str), "episode", "The agents (models), sorted by name; agent 1 is the "
          "first. Every per-agent list below follows this order."),
    Field("n_agents", _int, "episode", "Number of agents (2 for every shipped source)."),
    Field("n_turns", _int, "episode", "Number of user turns."),
    Field("winner", _str, "episode", "The source's outcome: one of `agent_models`, `tie` or `unknown` "
          "(mt_bench_repro: the judges' majority; chatbot_arena and local: the human vote; fastchat: unknown)."),
    Field("winner_source", _str, "episode", "Where `winner` comes from: `judge_majority`, `human`, `source` or "
          "`none`."),
    Field("tstamp_start", _float, "episode", "Earliest answer timestamp of the episode (unix seconds); null if none."),
    Field("tstamp_end", _float, "episode", "Latest answer timestamp of the episode (unix seconds); null if none."),
    # The conversation.
    Field("user_turns", pyarrow.list_(_str), "text", "The user's messages, one per turn."),
    Field("responses", pyarrow.list_(pyarrow.list_(_str)), "text", "The agents' replies: one list per agent (in "
          "`agent_models` order) of one reply per turn."),
    # Token accounting (enrich).
    Field("token_usage_per_turn", pyarrow.list_(TOKEN_ROW), "tokens", "One row per turn and agent: `user_tokens` "
          "(the turn's user message), `completion_tokens` (the agent's reply) and `billed_prompt_tokens` (the "
          "whole history the agent's API call re-sends, with chat-format overhead)."),
    Field("user_tokens", _int, "tokens", "Tokens of all user messages, each counted once."),
    Field("completion_tokens", _int, "tokens", "Tokens of all agent replies (every agent, every turn)."),
    Field("billed_prompt_tokens", _int, "tokens", "Prompt tokens billed over all agent calls."),
    Field("input_tokens", _int, "tokens", "Same as `billed_prompt_tokens` (input side of the episode)."),
    Field("output_tokens", _int, "tokens", "Same as `completion_tokens` (output side of the episode)."),
    Field("total_tokens", _int, "tokens", "`input_tokens + output_tokens`."),
    Field("completion_tokens_by_agent", pyarrow.list_(_int), "tokens", "Completion tokens per agent, in "
          "`agent_models` order."),
    Field("avg_tokens_per_turn", _float, "tokens", "`total_tokens / n_turns`."),
    Field("input_output_ratio", _float, "tokens", "`input_tokens / total_tokens`."),
    Field("coordination_overhead", _float, "tokens", "`|out_a - out_b| / total_tokens` over the agents' completion "
          "tokens (more than two agents: `(max - min) / total_tokens`)."),
    # Latent states (latent).
    Field("latent_per_turn", pyarrow.list_(pyarrow.list_(pyarrow.float32())), "latent", "One latent state per "
          "turn: the recurrent coordinator's state (`rank` float32 values) after the turn's last agent message."),
    Field("latent_split", _str, "latent", "`train` or `heldout`: the side of the latent model's question split "
          "this episode was on (no question on both sides)."),
    # Imported judges (label).
    Field("consensus", _str, "judges", "The judges' consensus (or the human vote): a model name, `tie` or "
          "`unknown`."),
    Field("consensus_category", _str, "judges", "`consensus` relative to the agent order: `agent_1`, `agent_2`, "
          "..., `tie` or `unknown`."),
    Field("consensus_source", _str, "judges", "`judge_majority`, `human` or `none`."),
    Field("n_judges", _int, "judges", "Judges that gave a verdict on this episode."),
    Field("n_consistent_judges", _int, "judges", "Of those, judges whose two orders (AB, BA) agreed."),
    Field("judge_verdicts", pyarrow.list_(JUDGE_ROW), "judges", "Each judge's verdict on the last turn it judged: "
          "`judge` (short name), `judge_id`, `turn`, the pair as the judge file ordered it (`model_a`, `model_b`), "
          "`winner_ab` and `winner_ba` (`A`, `B`, `tie` or `error`, letters relative to each order), `verdict` "
          "(a model name, `tie`, `inconsistent` or `error`) and `verdict_category` (relative to the agent order)."),
    # Rule labels (label).
    Field("rule_outcome", _str, "rules", "The agent with the higher mean 1-10 single-answer grade of the judges; "
          "`tie` when shared, `unknown` without grades."),
    Field("rule_outcome_category", _str, "rules", "`rule_outcome` relative to the agent order."),
    Field("coordination_success", _bool, "rules", "The outcome names a winner (neither tie nor unknown) and "
          "`coordination_overhead` is below `thresholds.coordination_overhead`."),
    Field("agent_grades", pyarrow.list_(_float), "rules", "Each agent's mean 1-10 grade (every judge and turn), in "
          "`agent_models` order; null when an agent has no grade."),
    Field("mean_grade", _float, "rules", "Mean of `agent_grades`; null without grades."),
    Field("efficiency_score", _float, "rules", "`mean_grade` per 1k completion tokens of the episode; null without "
          "grades."),
    Field("mean_agent_similarity", _float, "rules", "Mean over turns of `agent_similarity_per_turn`."),
    Field("agent_similarity_per_turn", pyarrow.list_(_float), "rules", "Per turn: cosine similarity of the agents' "
          "reply embeddings (mean over agent pairs); null when fewer than two agents replied."),
    Field("agreement_level_per_turn", pyarrow.list_(_str), "rules", "Per turn: `low` (similarity below "
          "`thresholds.agreement_low`), `high` (at or above `thresholds.agreement_high`), `medium`, or `unknown`."),
    Field("events", pyarrow.list_(EVENT_ROW), "rules", "Turn events: `agreement_drop` (similarity fell by more than "
          "`thresholds.agreement_drop` since the previous turn) and `length_imbalance` (the longest reply has at "
          "least `thresholds.length_ratio` times the completion tokens of the shortest)."),
    Field("n_agreement_drops", _int, "rules", "Number of `agreement_drop` events."),
    Field("n_length_imbalances", _int, "rules", "Number of `length_imbalance` events."),
)

FIELD_NAMES = tuple(f.name for f in FIELDS)

# Columns of the LLM-assisted labeler (schemas/llm_labels.py), present only when label.llm.enabled.
LLM_DESCRIPTIONS: dict[str, str] = {
    "llm_status": "LLM labeler: `valid`, `invalid` (every answer failed validation) or `unanswered`; null when the "
                  "episode was not sent (e.g. beyond `label.llm.max_episodes`).",
    "llm_valid": "LLM labeler: the label fields below are set (both orders answered validly).",
    "llm_success_score": "LLM labeler: coordination success 0-10, mean over both agent orders.",
    "llm_agreement": "LLM labeler: agreement between the agents: `low`, `medium` or `high`.",
    "llm_efficiency_score": "LLM labeler: communication efficiency 0-10, mean over both agent orders.",
    "llm_preferred": "LLM labeler: preferred model over both orders, `tie` or `inconsistent`.",
    "llm_preferred_ab": "LLM labeler: preferred model (or `tie`) with agent 1 shown as A.",
    "llm_preferred_ba": "LLM labeler: preferred model (or `tie`) with agent 2 shown as A.",
    "llm_consistent": "LLM labeler: both orders prefer the same model (or both tie).",
    "llm_reason": "LLM labeler: the short reason it gave.",
    "llm_prompt_tokens": "LLM labeler: prompt tokens billed for this episode's requests.",
    "llm_completion_tokens": "LLM labeler: completion tokens billed for this episode's requests.",
}


def describe(column: str) -> str:
    """The description of a release column; an unknown ``llm_`` column gets a generic one."""
    for field in FIELDS:
        if field.name == column:
            return field.description
    if column in LLM_DESCRIPTIONS:
        return LLM_DESCRIPTIONS[column]
    if column.startswith(LLM_PREFIX):
        return f"LLM labeler field `{column[len(LLM_PREFIX):]}` (coordset/llm_labels.py)."
    raise KeyError(column)


def arrow_schema(llm_types: dict[str, pyarrow.DataType] | None = None) -> pyarrow.Schema:
    """The Parquet file's schema: FIELDS in order, then the LLM columns present in this build."""
    fields = [pyarrow.field(f.name, f.type) for f in FIELDS]
    fields += [pyarrow.field(name, kind) for name, kind in sorted((llm_types or {}).items())]
    return pyarrow.schema(fields)


# ---------------------------------------------------------------------------------------------------------
# Pandera schema of a frame about to be written (list columns hold Python lists; latent vectors are float32).


def _is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple, np.ndarray))


def _str_list(value: Any) -> bool:
    return _is_list(value) and all(isinstance(v, str) for v in value)


def _responses(value: Any) -> bool:
    return _is_list(value) and all(_str_list(a) for a in value)


def _token_rows(value: Any) -> bool:
    keys = set(TOKEN_ROW.names)
    return _is_list(value) and all(
        isinstance(r, dict) and set(r) == keys and all(isinstance(r[k], int) and r[k] >= 0 for k in keys - {"agent"})
        for r in value)


def _judge_rows(value: Any) -> bool:
    keys = set(JUDGE_ROW.names)
    return _is_list(value) and all(isinstance(r, dict) and set(r) == keys for r in value)


def _event_rows(value: Any) -> bool:
    return _is_list(value) and all(
        isinstance(r, dict) and set(r) == {"turn", "event"} and r["event"] in EVENTS for r in value)


def _latent(rank: int) -> Check:
    def ok(value: Any) -> bool:
        return _is_list(value) and all(
            isinstance(v, np.ndarray) and v.dtype == np.float32 and v.shape == (rank,) and bool(np.isfinite(v).all())
            for v in value)
    return Check(ok, element_wise=True, error=f"latent_per_turn holds vectors of {rank} finite float32 values")


def _optional_floats(value: Any) -> bool:
    return _is_list(value) and all(v is None or (isinstance(v, float) and not np.isnan(v)) for v in value)


def _lengths(df: pd.DataFrame) -> pd.Series:
    """Every per-turn list has n_turns entries and every per-agent list n_agents."""
    turns, agents = df["n_turns"], df["n_agents"]
    ok = (df["user_turns"].map(len) == turns) & (df["latent_per_turn"].map(len) == turns)
    ok &= (df["agent_similarity_per_turn"].map(len) == turns) & (df["agreement_level_per_turn"].map(len) == turns)
    ok &= (df["responses"].map(len) == agents) & (df["completion_tokens_by_agent"].map(len) == agents)
    ok &= pd.Series([all(len(r) == t for r in rs) for rs, t in zip(df["responses"], turns, strict=True)],
                    index=df.index)
    ok &= df["token_usage_per_turn"].map(len) == turns * agents
    return ok


def _sorted(df: pd.DataFrame) -> bool:
    return bool(df["episode_id"].is_monotonic_increasing)


def release_schema(rank: int) -> pa.DataFrameSchema:
    """The release frame at ``rank`` (every latent vector has exactly ``rank`` values)."""
    nonneg = Check.ge(0)
    element = {"element_wise": True}
    columns = {
        # The episode's own fields are checked exactly as the normalize stage checks them.
        **{name: EPISODES.columns[name] for name in ("episode_id", "source", "question_id", "category", "language")},
        "date": Column(str, Check.str_matches(r"^\d{4}-\d{2}-\d{2}$"), nullable=True),
        **{name: EPISODES.columns[name] for name in ("agent_models", "n_agents", "n_turns", "winner",
                                                     "winner_source", "tstamp_start", "tstamp_end")},
        "user_turns": Column(object, Check(_str_list, error="user_turns is a list of strings", **element)),
        "responses": Column(object, Check(_responses, error="responses is a list (agents) of lists (turns) of text",
                                          **element)),
        "token_usage_per_turn": Column(object, Check(_token_rows, error="token_usage_per_turn rows have "
                                                     f"{list(TOKEN_ROW.names)}", **element)),
        "user_tokens": Column(int, nonneg),
        "completion_tokens": Column(int, nonneg),
        "billed_prompt_tokens": Column(int, nonneg),
        "input_tokens": Column(int, nonneg),
        "output_tokens": Column(int, nonneg),
        "total_tokens": Column(int, nonneg),
        "completion_tokens_by_agent": Column(object, Check(
            lambda v: _is_list(v) and all(isinstance(x, int) and x >= 0 for x in v),
            error="completion_tokens_by_agent is a list of counts", **element)),
        "avg_tokens_per_turn": Column(float, nonneg),
        "input_output_ratio": Column(float, Check.in_range(0, 1)),
        "coordination_overhead": Column(float, Check.in_range(0, 1)),
        "latent_per_turn": Column(object, _latent(rank)),
        "latent_split": Column(str, Check.isin(["train", "heldout"])),
        "consensus": Column(str),
        "consensus_category": Column(str, CATEGORY),
        "consensus_source": Column(str, Check.isin(["judge_majority", "human", "none"])),
        "n_judges": Column(int, nonneg),
        "n_consistent_judges": Column(int, nonneg),
        "judge_verdicts": Column(object, Check(_judge_rows, error=f"judge_verdicts rows have {list(JUDGE_ROW.names)}",
                                               **element)),
        "rule_outcome": Column(str),
        "rule_outcome_category": Column(str, CATEGORY),
        "coordination_success": Column(bool),
        "agent_grades": Column(object, Check(lambda v: v is None or _optional_floats(v),
                                             error="agent_grades is null or a list of grades", **element),
                               nullable=True),
        "mean_grade": Column(float, Check.in_range(1, 10), nullable=True),
        "efficiency_score": Column(float, nonneg, nullable=True),
        "mean_agent_similarity": Column(float, COSINE, nullable=True),
        "agent_similarity_per_turn": Column(object, Check(_optional_floats, error="agent_similarity_per_turn is a "
                                                          "list of similarities or nulls", **element)),
        "agreement_level_per_turn": Column(object, Check(
            lambda v: _is_list(v) and all(x in AGREEMENT_LEVELS for x in v),
            error=f"agreement_level_per_turn values are in {list(AGREEMENT_LEVELS)}", **element)),
        "events": Column(object, Check(_event_rows, error=f"events rows are {{turn, event in {list(EVENTS)}}}",
                                       **element)),
        "n_agreement_drops": Column(int, nonneg),
        "n_length_imbalances": Column(int, nonneg),
        f"^{LLM_PREFIX}.+$": Column(regex=True, nullable=True, required=False),
    }
    return pa.DataFrameSchema(
        name="release",
        columns=columns,
        checks=[
            Check(lambda df: df.apply(lambda r: r["winner"] in ("tie", "unknown") or r["winner"] in r["agent_models"],
                                      axis=1), error="winner is one of agent_models, tie or unknown"),
            Check(lambda df: df["n_agents"] == df["agent_models"].map(len), error="n_agents == len(agent_models)"),
            Check(_lengths, error="per-turn lists have n_turns entries, per-agent lists n_agents"),
            Check(lambda df: df["total_tokens"] == df["input_tokens"] + df["output_tokens"],
                  error="total_tokens == input_tokens + output_tokens"),
            Check(lambda df: df["n_consistent_judges"] <= df["n_judges"], error="n_consistent_judges <= n_judges"),
            Check(lambda df: df["n_judges"] == df["judge_verdicts"].map(len), error="n_judges == len(judge_verdicts)"),
            Check(lambda df: df["n_agreement_drops"] + df["n_length_imbalances"] == df["events"].map(len),
                  error="events count the agreement drops and length imbalances"),
            Check(_sorted, element_wise=False, error="rows sorted by episode_id"),
        ],
        strict=True,
        coerce=False,
    )


# ---------------------------------------------------------------------------------------------------------
# The JSONL record shape (data/release/coordset.jsonl): every key below must be present (values may be null).

RECORD_KEYS: dict[str, Any] = {
    "input": None,
    "context": {
        "agents": None,
        "responses": None,
        "winner": None,
        "token_usage": {"per_turn": None, "totals": None, "communication_efficiency": None, "method": None},
        "latent_states": {"per_turn": None, "method": None, "rank": None, "split": None, "error": None},
        "coordination_outcomes": {"judges": None, "rule": None, "llm": None},
    },
    "output": {"outcome": None, "outcome_category": None, "coordination_success": None},
    "metadata": {"source": None, "licence": None, "annotation_version": None, "date": None, "episode_id": None,
                 "question_id": None, "category": None, "language": None},
}


def missing_keys(record: dict[str, Any], shape: dict[str, Any] = RECORD_KEYS, prefix: str = "") -> list[str]:
    """Dotted paths of the keys of ``shape`` that ``record`` lacks."""
    missing = []
    for key, sub in shape.items():
        if not isinstance(record, dict) or key not in record:
            missing.append(prefix + key)
        elif sub is not None:
            missing += missing_keys(record[key], sub, f"{prefix}{key}.")
    return missing
