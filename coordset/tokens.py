"""Token counts with tiktoken, and the input tokens a chat API call would really bill.

Billing follows OpenAI's documented chat-format accounting: every message costs
``tokens_per_message`` plus its role and content tokens, and every reply is primed with
``tokens_per_reply`` tokens. Each agent call re-sends the whole history that agent has seen:
all user turns so far and its own earlier replies (MT-Bench agents answer independently, so an
agent never sees the other agent's replies).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import tiktoken

from coordset.errors import CoordsetError
from coordset.fetch import PINNED_SOURCES, fetch_file, mirror_root, read_pins

TIKTOKEN_BASE_URL = PINNED_SOURCES["tiktoken"].base_url


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
    pins = read_pins(PINNED_SOURCES["tiktoken"].pin_file)
    if rel not in pins:
        raise CoordsetError(f"enrich.encoding: {name!r} has no pinned file in coordset/pins/tiktoken.sha256; "
                            f"pinned: {sorted(p.removesuffix('.tiktoken') for p in pins)}")
    cache = Path(tempfile.mkdtemp(prefix="coordset-tiktoken-"))
    try:
        cache_key = hashlib.sha1((TIKTOKEN_BASE_URL + rel).encode()).hexdigest()
        fetch_file(PINNED_SOURCES["tiktoken"], rel, pins[rel], cache / cache_key, mirror=mirror)
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


def turn_usage(messages: pd.DataFrame, n_tokens: pd.Series, encoding: tiktoken.Encoding, *,
               tokens_per_message: int, tokens_per_reply: int) -> pd.DataFrame:
    """One row per (episode, turn, agent): user, completion and billed prompt tokens of that call."""
    frame = messages[["episode_id", "turn", "role", "agent_model"]].assign(n_tokens=n_tokens.values)
    role_tokens = {role: len(encoding.encode_ordinary(role)) for role in ("user", "assistant")}
    users = frame[frame["role"] == "user"].sort_values(["episode_id", "turn"])
    users = users.assign(cost=users["n_tokens"] + tokens_per_message + role_tokens["user"])
    users = users.assign(history_users=users.groupby("episode_id")["cost"].cumsum())
    agents = frame[frame["role"] == "agent"].sort_values(["episode_id", "agent_model", "turn"])
    agents = agents.assign(cost=agents["n_tokens"] + tokens_per_message + role_tokens["assistant"])
    # Own earlier replies re-sent at this call: the running sum up to, not including, this turn.
    agents = agents.assign(history_own=agents.groupby(["episode_id", "agent_model"])["cost"].cumsum()
                           - agents["cost"])
    usage = agents.merge(users[["episode_id", "turn", "n_tokens", "history_users"]],
                         on=["episode_id", "turn"], suffixes=("", "_user"), validate="many_to_one")
    usage = pd.DataFrame({
        "episode_id": usage["episode_id"],
        "turn": usage["turn"].astype("int64"),
        "agent_model": usage["agent_model"].astype(str),
        "user_tokens": usage["n_tokens_user"].astype("int64"),
        "completion_tokens": usage["n_tokens"].astype("int64"),
        "billed_prompt_tokens": (usage["history_users"] + usage["history_own"] + tokens_per_reply).astype("int64"),
    })
    return usage.sort_values(["episode_id", "turn", "agent_model"]).reset_index(drop=True)


def episode_usage(episodes: pd.DataFrame, turns: pd.DataFrame) -> pd.DataFrame:
    """Per-episode totals and communication-efficiency figures.

    ``coordination_overhead`` is the spread of the agents' completion tokens over all tokens:
    ``|out_a - out_b| / total`` for two agents, ``(max - min) / total`` for more.
    """
    sums = turns.groupby("episode_id", sort=True)[["completion_tokens", "billed_prompt_tokens"]].sum()
    users = turns.drop_duplicates(["episode_id", "turn"]).groupby("episode_id", sort=True)["user_tokens"].sum()
    # Completion tokens per agent, in each episode's agent_models order.
    agents = episodes[["episode_id", "agent_models"]].explode("agent_models").rename(
        columns={"agent_models": "agent_model"})
    agents = agents.assign(slot=agents.groupby("episode_id").cumcount())
    per_agent = turns.groupby(["episode_id", "agent_model"], as_index=False)["completion_tokens"].sum()
    agents = agents.merge(per_agent, on=["episode_id", "agent_model"], how="left").fillna({"completion_tokens": 0})
    agents = agents.sort_values(["episode_id", "slot"])
    grouped = agents.groupby("episode_id", sort=True)["completion_tokens"]
    spread = grouped.max() - grouped.min()
    frame = episodes[["episode_id", "n_turns", "n_agents"]].set_index("episode_id").sort_index()
    # Rows are sorted by episode, n_agents rows each: split the flat column instead of a per-group lambda.
    flat = agents["completion_tokens"].to_numpy(dtype="int64")
    bounds = np.cumsum(frame["n_agents"].to_numpy())[:-1]
    by_agent = pd.Series([part.tolist() for part in np.split(flat, bounds)], index=frame.index)
    completion = sums["completion_tokens"].reindex(frame.index).astype("int64")
    billed = sums["billed_prompt_tokens"].reindex(frame.index).astype("int64")
    total = billed + completion
    safe_total = total.where(total > 0, 1)
    out = pd.DataFrame({
        "n_turns": frame["n_turns"].astype("int64"),
        "n_agents": frame["n_agents"].astype("int64"),
        "user_tokens": users.reindex(frame.index).astype("int64"),
        "completion_tokens": completion,
        "billed_prompt_tokens": billed,
        "input_tokens": billed,
        "output_tokens": completion,
        "total_tokens": total,
        "completion_tokens_by_agent": by_agent,
        "avg_tokens_per_turn": total / frame["n_turns"],
        "input_output_ratio": (billed / safe_total).where(total > 0, 0.0),
        "coordination_overhead": (spread.reindex(frame.index) / safe_total).where(total > 0, 0.0).astype(float),
    })
    return out.rename_axis("episode_id").reset_index()
