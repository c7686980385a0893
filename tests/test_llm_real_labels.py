"""The LLM labeler end to end against a real model: llama.cpp's llama-server serving SmolLM2-135M-Instruct.

Nothing written by this repository is on the other end of the HTTP connection: real episodes of each label kind
(MT-Bench pairs, Who&When logs of both subsets, a negotiation) go through the real ``openai`` client to the real
server. A 135M model's labels are not research-grade; what is checked is the path: every answer parses and
validates or is recorded invalid, the answer store survives a server restart, and the budget holds. Marked
``llm_server`` (deselected by default; ``.ci/run`` runs it); skipped, with the reason, without build tools.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from coordset.errors import CoordsetError
from coordset.labels.llm import LlmSettings, label_with_llm
from coordset.normalize import normalize
from testkit.llama import llama_server_or_skip
from testkit.pipeline import MIRROR
from tests.helpers import fetch_raw, repo_params

pytestmark = [pytest.mark.llm_server, pytest.mark.skipif(not MIRROR.is_dir(), reason=f"no mirror at {MIRROR}")]

SOURCES = ["mt_bench_repro", "who_when", "llm_deliberation"]
# A slot holds 4096 tokens (ctx 8192 over 2 slots); 4,000 characters of conversation leave room for the
# instructions, the JSON around each step and the answer, and keep each call short on a 2-core CPU.
SETTINGS = LlmSettings(enabled=True, concurrency=2, max_calls=100, max_retries=2, timeout_s=300.0,
                       max_conversation_chars=4000)


@pytest.fixture(scope="module")
def episodes_and_messages(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The shortest MT-Bench pair, Who&When log of each subset and negotiation: every label kind, few calls."""
    params = repo_params(**{"sources.use": SOURCES, "sources.llm_deliberation.max_episodes": 10})
    raw = fetch_raw(tmp_path_factory.mktemp("raw"), *SOURCES, params=params)
    tables = normalize(params, raw)
    episodes, messages = tables.episodes, tables.messages
    chars = messages.groupby("episode_id")["n_chars"].sum()
    episodes = episodes.assign(chars=episodes["episode_id"].map(chars)).sort_values(["chars", "episode_id"])
    chosen = pd.concat([
        episodes[episodes["source"] == "mt_bench_repro"].head(1),
        episodes[episodes["subset"] == "algorithm_generated"].head(1),
        episodes[episodes["subset"] == "hand_crafted"].head(1),
        episodes[episodes["source"] == "llm_deliberation"].head(1),
    ]).drop(columns="chars")
    return chosen, messages[messages["episode_id"].isin(chosen["episode_id"])]


@pytest.fixture(scope="module")
def server() -> Iterator:
    with llama_server_or_skip() as started:
        yield started


def label(episodes: pd.DataFrame, messages: pd.DataFrame, base_url: str, model: str, store: Path,
          monkeypatch: pytest.MonkeyPatch, **changes: object):
    monkeypatch.setenv("OPENAI_BASE_URL", base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "local")
    settings = LlmSettings(**{**SETTINGS.__dict__, **changes})
    return label_with_llm(episodes, messages, model=model, settings=settings, cache_dir=store)


def test_every_label_kind_through_the_real_server_and_the_store_survives_a_restart(
        episodes_and_messages: tuple[pd.DataFrame, pd.DataFrame], server, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    episodes, messages = episodes_and_messages
    store = tmp_path / "store"
    first = label(episodes, messages, server.base_url, server.model, store, monkeypatch)
    labels = first.labels
    assert first.stats.complete and first.stats.calls_made >= first.stats.requests == 2 + 3
    assert labels["kind"].value_counts().to_dict() == {"group": 3, "pairwise": 1}
    # Every answer either validated or was recorded invalid after the allowed attempts: never a half label.
    assert set(labels["status"]) <= {"valid", "invalid"} and (labels["status"] == "valid").any()
    valid = labels[labels["valid"]].merge(episodes[["episode_id", "agents", "n_messages"]], on="episode_id")
    group = valid[valid["kind"] == "group"]
    assert all(a in list(agents) for a, agents in zip(group["mistake_agent"], group["agents"], strict=True))
    assert ((group["mistake_step"] >= 0) & (group["mistake_step"] < group["n_messages"])).all()
    assert valid["served_by"].str.startswith("local:").all()
    assert (labels["prompt_tokens"] > 0).all()
    print(labels[["episode_id", "kind", "status", "outcome", "mistake_agent", "mistake_step", "preferred",
                  "chars_cut"]].to_string())

    # A new server process on another port: the store answers everything, nothing is paid again.
    with llama_server_or_skip() as restarted:
        assert restarted.base_url != server.base_url or restarted.pid != server.pid
        again = label(episodes, messages, restarted.base_url, restarted.model, store, monkeypatch)
    assert again.stats.calls_made == 0 and again.stats.cache_hits == first.stats.requests
    pd.testing.assert_frame_equal(again.labels, labels)


def test_the_budget_holds_against_the_real_server(episodes_and_messages: tuple[pd.DataFrame, pd.DataFrame],
                                                  server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    episodes, messages = episodes_and_messages
    result = label(episodes, messages, server.base_url, server.model, tmp_path / "store", monkeypatch,
                   max_calls=2)
    assert result.stats.calls_made == 2 and result.stats.budget_exhausted and not result.stats.complete
    assert result.stats.answers_received <= 2 and (result.labels["status"] == "unanswered").any()


def test_a_prompt_past_the_real_servers_context_names_the_cut_param(
        episodes_and_messages: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # llama-server refuses (HTTP 400) a request longer than its slot: the stage stops, naming the param to lower.
    episodes, messages = episodes_and_messages
    chars = messages.groupby("episode_id")["n_chars"].sum()
    longest = episodes[episodes["episode_id"] == chars.idxmax()]
    assert chars.max() > 4 * 512  # past 512 tokens of English even before the instructions
    with llama_server_or_skip(ctx=512, parallel=1) as small:
        with pytest.raises(CoordsetError, match=r"HTTP 400: a prompt is longer than the model's context: lower "
                                                r"label\.llm\.max_conversation_chars \(now 48000"):
            label(longest, messages, small.base_url, small.model, tmp_path / "store", monkeypatch,
                  max_conversation_chars=48000, concurrency=1)
