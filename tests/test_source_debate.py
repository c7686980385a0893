"""The `debate` source (Multi-Agent-LLMs/DEBATE on the Hub): its reader on MALLM-shaped files the tests write,
its logged-prompt billing, its fetch (faked Hub; offline it says what to do) and its params.

The Hub cannot be reached from the test machines, so nothing here downloads: the reader is proven on
files in MALLM's output shape, and the fetch on a stand-in for huggingface_hub.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from coordset.enrich.tokens import load_encoding
from coordset.enrich.usage import enrich, enrich_settings
from coordset.errors import CoordsetError, ParamError
from coordset.normalize import normalize
from coordset.sources import REGISTRY
from coordset.sources.debate import DEBATE_FILES
from schemas import check
from schemas.enriched import CALL_USAGE
from schemas.normalized import EPISODES, MESSAGES, OUTCOMES, TURN_EVENTS
from tests.helpers import MIRROR, repo_params
from tests.test_local_formats import mallm_record

needs_mirror = pytest.mark.skipif(not MIRROR.is_dir(), reason=f"mirror not found at {MIRROR}")
CONFIG = "critical_expert_memory_simple_voting"


@pytest.fixture(autouse=True)
def _mirror_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COORDSET_MIRROR", str(MIRROR))


def _params(**overrides: Any) -> dict[str, Any]:
    return repo_params(**{"sources.use": ["debate"], **overrides})


def _raw(tmp_path: Path) -> Path:
    """data/raw/debate as a fetch leaves it: record files of two configurations (JSON list, Parquet), REVISION."""
    root = tmp_path / "raw" / "debate"
    (root / CONFIG).mkdir(parents=True)
    (root / CONFIG / "train.json").write_text(json.dumps([mallm_record("q1", n_agents=3, turns=2),
                                                          mallm_record("q2", n_agents=5, turns=1,
                                                                       decisionSuccess=False)]))
    relay = mallm_record("q1", n_agents=2, turns=3, paradigm="relay", decisionSuccess=None)
    for entry in relay["globalMemory"]:
        entry["memory_ids"] = entry["memory_ids"][-1:]  # relay: each agent is shown the previous message only
    rows = []
    for record in (relay,):  # Parquet cannot hold MALLM's empty additional_args objects: the Hub's files lack them
        record = {k: v for k, v in record.items() if k != "agentMemory"}
        record["globalMemory"] = [{k: v for k, v in e.items() if k != "additional_args"}
                                  for e in record["globalMemory"]]
        rows.append(record)
    (root / "relay_approval").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), root / "relay_approval" / "train.parquet")
    (root / "REVISION").write_text("0" * 40 + "\n")
    return tmp_path / "raw"


@needs_mirror
def test_debate_reads_mallm_files_and_bills_what_each_agent_saw(tmp_path: Path) -> None:
    tables = normalize(_params(), _raw(tmp_path))
    for frame, schema in ((tables.episodes, EPISODES), (tables.messages, MESSAGES), (tables.outcomes, OUTCOMES),
                          (tables.turn_events, TURN_EVENTS)):
        check(frame, schema, schema.name)
    episodes = tables.episodes.set_index("episode_id")
    assert episodes.index.tolist() == [f"debate/{CONFIG}/train/q1", f"debate/{CONFIG}/train/q2",
                                       "debate/relay_approval/train/q1"]
    assert episodes["n_agents"].tolist() == [3, 5, 2] and episodes["n_turns"].tolist() == [2, 1, 3]
    assert episodes["subset"].tolist() == [f"{CONFIG}/train", f"{CONFIG}/train", "relay_approval/train"]
    assert set(episodes["language"]) == {"en"} and episodes["category"].tolist() == ["memory", "memory", "relay"]
    # The same question in two configurations is one group (held out together).
    assert episodes.at[f"debate/{CONFIG}/train/q1", "group_id"] == episodes.at["debate/relay_approval/train/q1",
                                                                                  "group_id"]
    outcomes = tables.outcomes.set_index("episode_id")
    assert outcomes["outcome"].tolist() == ["success", "failure", "unknown"]
    assert outcomes["outcome_source"].tolist() == ["game_rule"] * 3
    relay = tables.messages[tables.messages["episode_id"] == "debate/relay_approval/train/q1"].reset_index(drop=True)
    task = relay.at[0, "text"]
    assert relay.at[1, "prompt"] == task
    assert relay.at[3, "prompt"] == f"{task}\n\n{relay.at[2, 'speaker']}: {relay.at[2, 'text']}"
    kinds = tables.turn_events.groupby("episode_id")["kind"].apply(list).to_dict()
    assert kinds[f"debate/{CONFIG}/train/q2"].count("agreement") == 4  # the first draft has no agreement

    usage = enrich(tables.episodes, tables.messages, enrich_settings(_params()))
    check(usage.calls, CALL_USAGE, "calls")
    encoding = load_encoding("cl100k_base")
    settings = enrich_settings(_params())
    user_role = len(encoding.encode_ordinary("user"))
    prompts = tables.messages.set_index(["episode_id", "position"])["prompt"]
    assert set(usage.calls["billing"]) == {"logged_prompt"}
    for call in usage.calls.itertuples():  # one user message holding exactly what the agent was shown
        prompt = prompts.loc[(call.episode_id, call.position)]
        assert call.billed_prompt_tokens == (len(encoding.encode_ordinary(prompt)) + settings.tokens_per_message
                                             + user_role + settings.tokens_per_reply)
    # A relay agent is shown one message, so its last call costs less than re-sending the whole history would.
    relay_tokens = usage.messages[usage.messages["episode_id"] == "debate/relay_approval/train/q1"]["n_tokens"]
    shared = int((relay_tokens.iloc[:-1] + settings.tokens_per_message + 1).sum()) + settings.tokens_per_reply
    last = usage.calls[usage.calls["episode_id"] == "debate/relay_approval/train/q1"].iloc[-1]
    assert last.billed_prompt_tokens < shared
    assert usage.metrics["by_source"]["debate"]["billing"] == "logged_prompt"


def test_max_episodes_keeps_the_first(tmp_path: Path) -> None:
    tables = normalize(_params(**{"sources.debate.max_episodes": 2}), _raw(tmp_path))
    assert tables.episodes["episode_id"].tolist() == [f"debate/{CONFIG}/train/q1", f"debate/{CONFIG}/train/q2"]


@pytest.mark.parametrize(("field", "value", "message", "reason"), [
    ("decisionSuccess", "maybe", r"field 'decisionSuccess': decisionSuccess must be true, false or null",
     "bad_label"),
    ("memory", [0, 42], r"globalMemory\[2\], field 'memory_ids': memory id 42 is not the message_id", "bad_memory_id"),
])
def test_bad_debate_records_stop_or_are_skipped(tmp_path: Path, field: str, value: Any, message: str,
                                               reason: str) -> None:
    raw = _raw(tmp_path)
    bad = mallm_record("q9")
    if field == "memory":
        bad["globalMemory"][2]["memory_ids"] = value
    else:
        bad[field] = value
    path = raw / "debate" / CONFIG / "train.json"
    path.write_text(json.dumps([*json.loads(path.read_text()), bad]))
    with pytest.raises(CoordsetError, match=rf"{CONFIG}/train\.json, record 2 \(line 1\), {message}"):
        normalize(_params(), raw)
    tables = normalize(_params(**{"normalize.on_bad_record": "skip"}), raw)
    assert len(tables.episodes) == 3 and dict(tables.skips.counts) == {("debate", reason): 1}


def test_without_downloaded_files_the_error_says_to_fetch(tmp_path: Path) -> None:
    with pytest.raises(CoordsetError, match=r"no downloaded files: run the fetch stage with network access.*HF_TOKEN"):
        normalize(_params(), tmp_path / "raw")


def test_offline_fetch_says_what_to_do_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # and nowhere to go even if offline mode were ignored
    out = tmp_path / "debate"
    with pytest.raises(CoordsetError) as info:
        REGISTRY["debate"].fetch_into(out, _params(), mirror=None)
    message = str(info.value)
    assert message.startswith("source debate: cannot download Multi-Agent-LLMs/DEBATE@")
    for advice in ("network access to huggingface.co", "unset HF_HUB_OFFLINE", "export HF_TOKEN=<token>",
                   "remove debate from sources.use in params.yaml"):
        assert advice in message
    assert not (out / "REVISION").exists()


class _FakeHub:
    """Stands in for huggingface_hub: resolves the revision and 'downloads' one record file."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def api(self, token: str | None = None) -> Any:
        hub = self

        class Api:
            def dataset_info(self, repo_id: str, revision: str) -> Any:
                hub.calls.append({"info": repo_id, "revision": revision, "token": token})
                return type("Info", (), {"sha": "a" * 40})()

        return Api()

    def snapshot_download(self, repo_id: str, **kwargs: Any) -> str:
        self.calls.append({"download": repo_id, **kwargs})
        out = Path(kwargs["local_dir"])
        (out / CONFIG).mkdir(parents=True)
        (out / CONFIG / "train.json").write_text(json.dumps([mallm_record("q1")]))
        (out / ".cache" / "huggingface").mkdir(parents=True)
        return str(out)


def test_fetch_pins_the_revision_records_the_commit_and_the_files_read(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    hub = _FakeHub()
    monkeypatch.setattr(huggingface_hub, "HfApi", hub.api)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub.snapshot_download)
    monkeypatch.setenv("HF_TOKEN", "test-token")
    params = _params()
    REGISTRY["debate"].fetch_into(tmp_path / "raw" / "debate", params, mirror=None)
    revision = params["sources"]["debate"]["revision"]
    assert hub.calls[0] == {"info": "Multi-Agent-LLMs/DEBATE", "revision": revision, "token": "test-token"}
    download = hub.calls[1]
    assert (download["revision"], download["repo_type"], download["allow_patterns"]) == ("a" * 40, "dataset",
                                                                                          DEBATE_FILES)
    raw = tmp_path / "raw" / "debate"
    assert (raw / "REVISION").read_text() == "a" * 40 + "\n" and not (raw / ".cache").exists()
    tables = normalize(params, tmp_path / "raw")
    assert tables.episodes["episode_id"].tolist() == [f"debate/{CONFIG}/train/q1"]


def test_params_pin_a_commit_and_leave_debate_out_of_the_default_build() -> None:
    params = repo_params()
    assert re.fullmatch(r"[0-9a-f]{40}", params["sources"]["debate"]["revision"])
    assert "debate" not in params["sources"]["use"]
    source = REGISTRY["debate"]
    assert (source.billing, source.parallel, source.success_outcomes, source.hf_license) == (
        "logged_prompt", False, ("success",), "apache-2.0")


def test_a_missing_revision_is_refused_naming_the_key(tmp_path: Path) -> None:
    params = _params()
    del params["sources"]["debate"]["revision"]
    with pytest.raises(ParamError, match=r"sources\.debate\.revision"):
        REGISTRY["debate"].fetch_into(tmp_path / "debate", params, mirror=None)


def test_reading_twice_gives_the_same_tables(tmp_path: Path) -> None:
    raw = _raw(tmp_path)
    first = normalize(_params(), raw).messages
    second = normalize(_params(), raw).messages
    pd.testing.assert_frame_equal(first, second)
