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

from schemas.labels import EPISODE_LABELS
from schemas.normalized import EPISODES, OUTCOMES

AGREEMENT_LEVELS = ("low", "medium", "high", "unknown")
EVENTS = ("agreement_drop", "length_imbalance")
LLM_PREFIX = "llm_"

_str, _int, _float, _bool = pyarrow.string(), pyarrow.int64(), pyarrow.float64(), pyarrow.bool_()

MESSAGE_ROW = pyarrow.struct([
    ("position", _int), ("turn", _int), ("speaker", _str), ("role", _str), ("model", _str), ("text", _str),
    ("reasoning", _str),
])
TOKEN_ROW = pyarrow.struct([
    ("position", _int), ("turn", _int), ("agent", _str), ("completion_tokens", _int), ("reasoning_tokens", _int),
    ("billed_prompt_tokens", _int), ("billing", _str),
])
TURN_EVENT_ROW = pyarrow.struct([
    ("turn", _int), ("position", _int), ("kind", _str), ("agent", _str), ("value", _float), ("detail", _str),
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
    Field("episode_id", _str, "episode", "Unique id, `<source>/...`; rows are sorted by it."),
    Field("source", _str, "episode", "Where the episode comes from (see Sources)."),
    Field("group_id", _str, "episode", "What is held out together: the MT-Bench question (every model pair of a "
          "question shares it), the Who&When task, the negotiation game configuration, the ChatDev project."),
    Field("category", _str, "episode", "The source's category (MT-Bench: writing, roleplay, reasoning, math, "
          "coding, extraction, stem, humanities; Who&When: the task level; ...); null where the source has none."),
    Field("subset", _str, "episode", "The source's own subset (Who&When: `algorithm_generated` or `hand_crafted`); "
          "null where it has none."),
    Field("language", _str, "episode", "Language of the conversation as the source gives it."),
    Field("date", _str, "episode", "UTC date (YYYY-MM-DD) of the episode's latest timestamp in the source data "
          "(`tstamp_end`, else `tstamp_start`); null when the source has no timestamps. Never the build date."),
    Field("agents", pyarrow.list_(_str), "episode", "The agents by name (role); head-to-head sources name them by "
          "model, sorted. Every per-agent list below follows this order."),
    Field("agent_models", pyarrow.list_(_str), "episode", "The model behind each agent, aligned with `agents` "
          "(models may repeat; null where the source does not say)."),
    Field("n_agents", _int, "episode", "Number of agents."),
    Field("n_turns", _int, "episode", "Number of turns (what a turn is depends on the source: see Sources)."),
    Field("n_messages", _int, "episode", "Number of messages (user, agents and tools)."),
    Field("billing", _str, "episode", "How each agent call is billed (see Token accounting): `own_thread`, "
          "`shared_history` or `logged_prompt`."),
    Field("parallel", _bool, "episode", "The agents answered the same user turns in parallel (head-to-head); "
          "false for conversations among agents."),
    Field("tstamp_start", _float, "episode", "Earliest message timestamp of the episode (unix seconds); null if none."),
    Field("tstamp_end", _float, "episode", "Latest message timestamp of the episode (unix seconds); null if none."),
    # The conversation.
    Field("messages", pyarrow.list_(MESSAGE_ROW), "text", "Every message in order: `position` (0-based), `turn`, "
          "`speaker` (an agent, `user` or a tool such as a code terminal), `role` (`user`, `agent` or `tool`), the "
          "agent's `model` where known, the `text` it said and, where the source logs it, its private `reasoning` "
          "(what it wrote but did not say)."),
    # Token accounting (enrich).
    Field("token_usage_per_call", pyarrow.list_(TOKEN_ROW), "tokens", "One row per agent message (an API call): "
          "`position`, `turn`, `agent`, `completion_tokens` (its text plus any logged private reasoning, "
          "`reasoning_tokens`), `billed_prompt_tokens` (what the call was billed for what the agent saw, with "
          "chat-format overhead) and `billing` (the rule used: `own_thread`, `shared_history` or `logged_prompt`)."),
    Field("n_calls", _int, "tokens", "Number of agent messages (API calls)."),
    Field("user_tokens", _int, "tokens", "Tokens of all user messages, each counted once."),
    Field("completion_tokens", _int, "tokens", "Tokens of all agent messages (every agent, every turn)."),
    Field("billed_prompt_tokens", _int, "tokens", "Prompt tokens billed over all agent calls."),
    Field("input_tokens", _int, "tokens", "Same as `billed_prompt_tokens` (input side of the episode)."),
    Field("output_tokens", _int, "tokens", "Same as `completion_tokens` (output side of the episode)."),
    Field("total_tokens", _int, "tokens", "`input_tokens + output_tokens`."),
    Field("completion_tokens_by_agent", pyarrow.list_(_int), "tokens", "Completion tokens per agent, in "
          "`agents` order."),
    Field("avg_tokens_per_turn", _float, "tokens", "`total_tokens / n_turns`."),
    Field("input_output_ratio", _float, "tokens", "`input_tokens / total_tokens`."),
    Field("coordination_overhead", _float, "tokens", "`|out_a - out_b| / total_tokens` over the agents' completion "
          "tokens (more than two agents: `(max - min) / total_tokens`)."),
    # Latent states (latent).
    Field("latent_per_turn", pyarrow.list_(pyarrow.list_(pyarrow.float32())), "latent", "One latent state per "
          "turn: the recurrent coordinator's state (`rank` float32 values) after the turn's last message."),
    Field("latent_split", _str, "latent", "`train` or `heldout`: the side of the latent model's group split "
          "this episode was on (no group on both sides)."),
    # Imported judges (label).
    Field("consensus", _str, "outcome", "The episode's outcome as its source makes it: the judges' consensus or the "
          "human vote (a model name, `tie` or `unknown`), a human failure annotation (`failure`), a game rule "
          "(`pass` / `fail`), a moderator or judge (`correct` / `incorrect`), or `unknown`."),
    Field("consensus_category", _str, "outcome", "`consensus` without agent names: a winning agent becomes "
          "`agent_1`, `agent_2`, ... by its slot; other labels stay."),
    Field("consensus_source", _str, "outcome", "Who made it: `judge_majority`, `human_vote`, `human_annotation`, "
          "`game_rule`, `moderator_judge` or `none`."),
    Field("unknown_reason", _str, "outcome", "Why the outcome is `unknown`, when it is."),
    Field("mistake_agent", _str, "outcome", "Who&When's human label: the agent responsible for the failure."),
    Field("mistake_step", _int, "outcome", "Who&When's human label: the `position` of the decisive error."),
    Field("mistake_reason", _str, "outcome", "Who&When's human label: why that step was the decisive error."),
    Field("any_deal_passed", _bool, "outcome", "Negotiations: whether any deal p1 proposed during the game would "
          "have passed by the game's rule."),
    Field("turn_events", pyarrow.list_(TURN_EVENT_ROW), "outcome", "The source's own turn-level annotations: `kind` "
          "(`decisive_error`, `deal_proposed`, `moderator_preference`, ...), `turn`, `position` of the message it "
          "is about, `agent`, a number `value` (a proposal's accepting parties) and `detail`."),
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
    Field("coordination_success", _bool, "rules", "Head-to-head sources: the outcome names a winner (neither tie "
          "nor unknown) and `coordination_overhead` is below `thresholds.coordination_overhead`. Conversations among "
          "agents: the source's own outcome is a success (a deal that passes, a correct answer); null when unknown."),
    Field("agent_grades", pyarrow.list_(_float), "rules", "Each agent's mean 1-10 grade (every judge and turn), in "
          "`agents` order; null when an agent has no grade."),
    Field("mean_grade", _float, "rules", "Mean of `agent_grades`; null without grades."),
    Field("efficiency_score", _float, "rules", "`mean_grade` per 1k completion tokens of the episode; null without "
          "grades."),
    Field("mean_agent_similarity", _float, "rules", "Mean over turns of `agent_similarity_per_turn`."),
    Field("agent_similarity_per_turn", pyarrow.list_(_float), "rules", "Per turn: mean pairwise cosine similarity "
          "of the embeddings of the agent messages in that turn (a question turn's replies, a negotiation round); "
          "null when fewer than two agent messages."),
    Field("agreement_level_per_turn", pyarrow.list_(_str), "rules", "Per turn: `low` (similarity below "
          "`thresholds.agreement_low`), `high` (at or above `thresholds.agreement_high`), `medium`, or `unknown`."),
    Field("events", pyarrow.list_(EVENT_ROW), "rules", "Turn events: `agreement_drop` (similarity fell by more than "
          "`thresholds.agreement_drop` since the previous turn) and `length_imbalance` (the longest reply has at "
          "least `thresholds.length_ratio` times the completion tokens of the shortest)."),
    Field("n_agreement_drops", _int, "rules", "Number of `agreement_drop` events."),
    Field("n_length_imbalances", _int, "rules", "Number of `length_imbalance` events."),
)

FIELD_NAMES = tuple(f.name for f in FIELDS)

# Columns of the LLM-assisted labeler's consensus (schemas/llm_labels.py LLM_CONSENSUS), present only when
# label.llm.enabled; one row per episode and model is in data/labels/llm_labels.parquet.
LLM_DESCRIPTIONS: dict[str, str] = {
    "llm_kind": "LLM labeler: `pairwise` (two agents answering in parallel, judged in both orders) or `group` "
                "(a conversation among agents, judged as a whole); null when the episode was not sent (beyond "
                "`label.llm.max_episodes`, or a parallel episode with other than two agents).",
    "llm_status": "LLM labeler: `valid` (at least one model gave a valid label), `invalid` (every answer failed "
                  "validation) or `unanswered`.",
    "llm_n_models": "LLM labeler: models asked (the top-level `model`).",
    "llm_n_valid": "LLM labeler: models whose label is valid; the consensus is made of these.",
    "llm_models": "LLM labeler: the models whose valid labels make the consensus, comma-separated.",
    "llm_served_by": "LLM labeler: what served those answers: `local` (a server on this machine) or the "
                     "endpoint's host, and the model id the response named.",
    "llm_success_score": "LLM labeler: coordination success 0-10 (pairwise: mean over both orders), mean over models.",
    "llm_agreement": "LLM labeler: agreement between the agents, `low`, `medium` or `high`; median over models.",
    "llm_efficiency_score": "LLM labeler: communication efficiency 0-10, mean over models.",
    "llm_preferred": "LLM labeler, pairwise: the model preferred in both orders (majority over models), `tie`, "
                     "`inconsistent` (one model whose orders disagree) or `unknown`.",
    "llm_consistent": "LLM labeler, pairwise: every valid model preferred the same agent (or tie) in both orders.",
    "llm_outcome": "LLM labeler, group: `success` or `failure` (majority over models; `unknown` on an even split).",
    "llm_mistake_agent": "LLM labeler, group: the agent whose error was decisive (most named over models; null on "
                         "a tie), as in Who&When's failure attribution.",
    "llm_mistake_step": "LLM labeler, group: the message position of the decisive error (most named over models, "
                        "the earliest on a tie).",
    "llm_reason": "LLM labeler: the short reason the first valid model gave.",
    "llm_chars_cut": "LLM labeler: characters cut from the conversation to fit `label.llm.max_conversation_chars` "
                     "(0: sent whole).",
    "llm_prompt_tokens": "LLM labeler: prompt tokens billed for this episode's requests, all models.",
    "llm_completion_tokens": "LLM labeler: completion tokens billed for this episode's requests, all models.",
}


def describe(column: str) -> str:
    """The description of a release column; an unknown ``llm_`` column gets a generic one."""
    for field in FIELDS:
        if field.name == column:
            return field.description
    if column in LLM_DESCRIPTIONS:
        return LLM_DESCRIPTIONS[column]
    if column.startswith(LLM_PREFIX):
        return f"LLM labeler field `{column[len(LLM_PREFIX):]}` (coordset/labels/llm.py)."
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


def _rows(row: pyarrow.StructType, name: str) -> Check:
    keys = set(row.names)
    return Check(lambda v: _is_list(v) and all(isinstance(r, dict) and set(r) == keys for r in v), element_wise=True,
                 error=f"{name} rows have {list(row.names)}")


def _token_rows(value: Any) -> bool:
    keys = set(TOKEN_ROW.names)
    counts = keys - {"agent", "billing"}
    return _is_list(value) and all(
        isinstance(r, dict) and set(r) == keys and all(isinstance(r[k], int) and r[k] >= 0 for k in counts)
        for r in value)


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
    """Every per-turn list has n_turns entries, every per-agent list n_agents, every message list n_messages."""
    turns, agents = df["n_turns"], df["n_agents"]
    ok = (df["latent_per_turn"].map(len) == turns)
    ok &= (df["agent_similarity_per_turn"].map(len) == turns) & (df["agreement_level_per_turn"].map(len) == turns)
    ok &= (df["completion_tokens_by_agent"].map(len) == agents) & (df["agent_models"].map(len) == agents)
    ok &= df["messages"].map(len) == df["n_messages"]
    ok &= df["token_usage_per_call"].map(len) == df["n_calls"]
    return ok


def _sorted(df: pd.DataFrame) -> bool:
    return bool(df["episode_id"].is_monotonic_increasing)


def release_schema(rank: int) -> pa.DataFrameSchema:
    """The release frame at ``rank`` (every latent vector has exactly ``rank`` values).

    Scalar columns that come from an earlier table are checked exactly as that table's schema checks them.
    """
    nonneg = Check.ge(0)
    element = {"element_wise": True}
    episode = {name: EPISODES.columns[name] for name in ("episode_id", "source", "group_id", "category", "subset",
                                                         "language", "agents", "agent_models", "n_agents", "n_turns",
                                                         "n_messages", "billing", "parallel", "tstamp_start",
                                                         "tstamp_end")}
    outcome = {name: OUTCOMES.columns[name] for name in ("unknown_reason", "mistake_agent", "mistake_step",
                                                         "mistake_reason", "any_deal_passed")}
    labels = {name: EPISODE_LABELS.columns[name] for name in (
        "consensus", "consensus_category", "consensus_source", "n_judges", "n_consistent_judges", "rule_outcome",
        "rule_outcome_category", "coordination_success", "mean_grade", "efficiency_score", "mean_agent_similarity",
        "n_agreement_drops", "n_length_imbalances")}
    columns = {
        **episode,
        "date": Column(str, Check.str_matches(r"^\d{4}-\d{2}-\d{2}$"), nullable=True),
        "messages": Column(object, _rows(MESSAGE_ROW, "messages")),
        "token_usage_per_call": Column(object, Check(_token_rows, error="token_usage_per_call rows have "
                                                     f"{list(TOKEN_ROW.names)}", **element)),
        "n_calls": Column(int, nonneg),
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
        **outcome,
        "turn_events": Column(object, _rows(TURN_EVENT_ROW, "turn_events")),
        **labels,
        "judge_verdicts": Column(object, _rows(JUDGE_ROW, "judge_verdicts")),
        "agent_grades": Column(object, Check(lambda v: v is None or _optional_floats(v),
                                             error="agent_grades is null or a list of grades", **element),
                               nullable=True),
        "agent_similarity_per_turn": Column(object, Check(_optional_floats, error="agent_similarity_per_turn is a "
                                                          "list of similarities or nulls", **element)),
        "agreement_level_per_turn": Column(object, Check(
            lambda v: _is_list(v) and all(x in AGREEMENT_LEVELS for x in v),
            error=f"agreement_level_per_turn values are in {list(AGREEMENT_LEVELS)}", **element)),
        "events": Column(object, Check(_event_rows, error=f"events rows are {{turn, event in {list(EVENTS)}}}",
                                       **element)),
    }
    assert set(columns) == set(FIELD_NAMES), "every field has a check and every check a field"
    columns = {name: columns[name] for name in FIELD_NAMES}  # in the published order
    columns[f"^{LLM_PREFIX}.+$"] = Column(regex=True, nullable=True, required=False)
    return pa.DataFrameSchema(
        name="release",
        columns=columns,
        checks=[
            *EPISODES.checks,
            Check(_lengths, error="per-turn lists have n_turns entries, per-agent lists n_agents, messages n_messages"),
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
        "agent_models": None,
        "messages": None,
        "responses": None,
        "winner": None,
        "token_usage": {"per_call": None, "totals": None, "communication_efficiency": None, "method": None},
        "latent_states": {"per_turn": None, "method": None, "rank": None, "split": None, "error": None},
        "coordination_outcomes": {"judges": None, "rule": None, "llm": None},
    },
    "output": {"outcome": None, "outcome_category": None, "outcome_source": None, "coordination_success": None},
    "metadata": {"source": None, "licence": None, "annotation_version": None, "date": None, "episode_id": None,
                 "group_id": None, "category": None, "subset": None, "language": None},
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
