"""Token counts with tiktoken, and the input tokens a chat API call would really bill.

Billing follows OpenAI's documented chat-format accounting: every message costs
``tokens_per_message`` plus its role and content tokens, and every reply is primed with
``tokens_per_reply`` tokens. Each agent message is one call, billed for what that agent saw, by
its source's rule (``coordset.sources.registry.BILLING``):

- ``own_thread`` (head-to-head sources): the user turns so far and the agent's own earlier replies;
  the agents answer independently, so one never sees the other's replies;
- ``shared_history`` (group chats, debates): every earlier message of the episode, as a group-chat
  framework re-sends it (system prompts are not in the sources, so not counted);
- ``logged_prompt`` (LLM-Deliberation: logged verbatim; ChatDev: rebuilt from the log's system prompts,
  phase prompt and phase history): that call's prompt, counted as one user message (a call without one
  falls back to ``shared_history``).

Completion tokens are the message's text plus its private reasoning where the source logs it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import tiktoken

from coordset.errors import CoordsetError
from coordset.fetch import TIKTOKEN, fetch_file, mirror_root, read_pins


def load_encoding(name: str, mirror: Path | None = None) -> tiktoken.Encoding:
    """The tokenizer ``name``: from the verified mirror file when a mirror is set, else as tiktoken does.

    With a mirror, the verified file is placed in a private tiktoken cache under the name tiktoken
    looks for, so tiktoken's own constructor (and its own hash check) builds the encoding.
    """
    mirror = mirror if mirror is not None else mirror_root()
    if mirror is None:
        try:
            return tiktoken.get_encoding(name)
        except ValueError as exc:
            raise CoordsetError(f"enrich.encoding: {exc}") from None
        except Exception as exc:  # tiktoken raises requests/urllib errors when offline
            raise CoordsetError(f"cannot load tiktoken encoding {name!r}: {exc}. Without network access set "
                                "COORDSET_MIRROR=<path to>/shared/mirror.") from None
    rel = f"{name}.tiktoken"
    pins = read_pins(TIKTOKEN.pin_file)
    if rel not in pins:
        raise CoordsetError(f"enrich.encoding: {name!r} has no pinned file in coordset/pins/tiktoken.sha256; "
                            f"pinned: {sorted(p.removesuffix('.tiktoken') for p in pins)}")
    cache = Path(tempfile.mkdtemp(prefix="coordset-tiktoken-"))
    try:
        cache_key = hashlib.sha1((TIKTOKEN.base_url + rel).encode()).hexdigest()
        fetch_file(TIKTOKEN, rel, pins[rel], cache / cache_key, mirror=mirror)
        previous = os.environ.get("TIKTOKEN_CACHE_DIR")
        os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
        try:
            return tiktoken.get_encoding(name)
        finally:
            if previous is None:
                del os.environ["TIKTOKEN_CACHE_DIR"]
            else:
                os.environ["TIKTOKEN_CACHE_DIR"] = previous
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def count_tokens(encoding: tiktoken.Encoding, texts: list[str], num_threads: int = 2) -> list[int]:
    """Tokens of each text as plain text (special-token strings in content count as text)."""
    return [len(t) for t in encoding.encode_ordinary_batch(texts, num_threads=num_threads)]


def message_tokens(messages: pd.DataFrame, encoding: tiktoken.Encoding) -> pd.Series:
    """Tokens per message row, encoding each distinct text (by sha256) once."""
    distinct = messages.drop_duplicates("text_sha256")
    counts = dict(zip(distinct["text_sha256"], count_tokens(encoding, distinct["text"].tolist()), strict=True))
    return messages["text_sha256"].map(counts).astype("int64")


def optional_tokens(texts: pd.Series, encoding: tiktoken.Encoding) -> pd.Series:
    """Tokens of an optional text column (reasoning, logged prompt): NA where absent, each distinct text once."""
    present = texts.dropna()
    distinct = list(dict.fromkeys(present.tolist()))
    counts = dict(zip(distinct, count_tokens(encoding, distinct), strict=True))
    return texts.map(counts).astype("Int64")


# The chat role a message is sent under when it is re-sent as history: tool output goes back as a user message.
CHAT_ROLE = {"user": "user", "agent": "assistant", "tool": "user"}


def call_usage(messages: pd.DataFrame, n_tokens: pd.Series, reasoning_tokens: pd.Series, prompt_tokens: pd.Series,
               billing: pd.Series, encoding: tiktoken.Encoding, *, tokens_per_message: int,
               tokens_per_reply: int) -> pd.DataFrame:
    """One row per agent message (an API call): the tokens it completed and the prompt tokens it was billed.

    ``messages`` is sorted by (episode_id, position). ``billing`` gives each message's episode's rule
    (``coordset.sources.registry.BILLING``); ``prompt_tokens`` the tokens of a logged prompt (NA without one).
    """
    role_tokens = {role: len(encoding.encode_ordinary(chat)) for role, chat in CHAT_ROLE.items()}
    frame = messages[["episode_id", "turn", "position", "speaker", "role", "agent_model"]].reset_index(drop=True)
    frame["n_tokens"] = n_tokens.to_numpy()
    cost = frame["n_tokens"] + tokens_per_message + frame["role"].map(role_tokens)
    is_user = (frame["role"] == "user").astype("int64")
    is_agent = frame["role"] == "agent"
    # shared_history: every earlier message of the episode.
    shared = cost.groupby(frame["episode_id"], sort=False).cumsum() - cost
    # own_thread: the user messages so far (this turn's included) and the agent's own earlier replies.
    users_so_far = (cost * is_user).groupby(frame["episode_id"], sort=False).cumsum()
    own_cost = cost.where(is_agent, 0)
    own_before = own_cost.groupby([frame["episode_id"], frame["speaker"]], sort=False).cumsum() - own_cost
    logged = prompt_tokens.reset_index(drop=True).astype("Int64") + tokens_per_message + role_tokens["user"]
    rule = billing.reset_index(drop=True)
    billed = shared.where(rule == "shared_history", users_so_far + own_before)
    use_logged = (rule == "logged_prompt") & logged.notna()
    billed = billed.where(~use_logged, logged.fillna(0).astype("int64"))
    basis = rule.where(~((rule == "logged_prompt") & ~use_logged), "shared_history")
    user_tokens = frame["n_tokens"].where(frame["role"] == "user", 0).groupby(
        [frame["episode_id"], frame["turn"]], sort=False).transform("sum")
    calls = pd.DataFrame({
        "episode_id": frame["episode_id"],
        "turn": frame["turn"].astype("int64"),
        "position": frame["position"].astype("int64"),
        "speaker": frame["speaker"],
        "agent_model": frame["agent_model"],
        "user_tokens": user_tokens.astype("int64"),
        "reasoning_tokens": reasoning_tokens.reset_index(drop=True).astype("int64"),
        "completion_tokens": (frame["n_tokens"] + reasoning_tokens.reset_index(drop=True)).astype("int64"),
        "billed_prompt_tokens": (billed + tokens_per_reply).astype("int64"),
        "billing": basis,
    })[is_agent.to_numpy()]
    return calls.sort_values(["episode_id", "position"]).reset_index(drop=True)


def episode_usage(episodes: pd.DataFrame, messages: pd.DataFrame, calls: pd.DataFrame) -> pd.DataFrame:
    """Per-episode totals and communication-efficiency figures.

    ``coordination_overhead`` is the spread of the agents' completion tokens over all tokens:
    ``|out_a - out_b| / total`` for two agents, ``(max - min) / total`` for more.
    """
    frame = episodes[["episode_id", "n_turns", "n_agents", "agents"]].set_index("episode_id").sort_index()
    sums = calls.groupby("episode_id", sort=True)[["completion_tokens", "billed_prompt_tokens"]].sum()
    users = messages[messages["role"] == "user"].groupby("episode_id", sort=True)["n_tokens"].sum()
    per_agent = calls.groupby(["episode_id", "speaker"], sort=False)["completion_tokens"].sum().to_dict()
    by_agent = pd.Series([[int(per_agent.get((eid, a), 0)) for a in agents]
                          for eid, agents in zip(frame.index, frame["agents"], strict=True)], index=frame.index)
    spread = by_agent.map(lambda v: max(v) - min(v))
    completion = sums["completion_tokens"].reindex(frame.index, fill_value=0).astype("int64")
    billed = sums["billed_prompt_tokens"].reindex(frame.index, fill_value=0).astype("int64")
    total = billed + completion
    safe_total = total.where(total > 0, 1)
    out = pd.DataFrame({
        "n_turns": frame["n_turns"].astype("int64"),
        "n_agents": frame["n_agents"].astype("int64"),
        "n_calls": calls.groupby("episode_id").size().reindex(frame.index, fill_value=0).astype("int64"),
        "user_tokens": users.reindex(frame.index, fill_value=0).astype("int64"),
        "completion_tokens": completion,
        "billed_prompt_tokens": billed,
        "input_tokens": billed,
        "output_tokens": completion,
        "total_tokens": total,
        "completion_tokens_by_agent": by_agent,
        "avg_tokens_per_turn": total / frame["n_turns"],
        "input_output_ratio": (billed / safe_total).where(total > 0, 0.0),
        "coordination_overhead": (spread / safe_total).where(total > 0, 0.0).astype(float),
    })
    return out.rename_axis("episode_id").reset_index()
