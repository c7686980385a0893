"""D-MAD (``Multi-Agent-LLMs/DEBATE`` on the Hugging Face Hub): MALLM multi-agent debates, Apache-2.0.

The dataset holds the records MALLM writes, one per discussion, for several debate configurations
(persona generator x discussion paradigm x decision protocol). ``fetch`` downloads its record files
(``DEBATE_FILES``) at ``sources.debate.revision`` with ``huggingface_hub`` and writes the commit it read to
``data/raw/debate/REVISION``; ``read`` turns every record into an episode exactly as the ``local`` source's
``mallm`` format does (``coordset.sources.local_mallm``): personas are the agents, ``globalMemory`` the
messages after the task, ``decisionSuccess`` the outcome (``success`` / ``failure`` by ``game_rule``: the
decision protocol reached a decision or not), per-message ``agreement`` the turn events, and the memory ids
of each message say what its agent saw, which is that call's ``prompt`` and what it is billed for
(``logged_prompt``). Episode ids are ``debate/<file path without suffix>/<exampleId>``.

The default revision is the Hub commit whose README.md reads "D-MAD: Diverse Multi-Agent Debates"
(``85d84cb77cb98c8bb9f237aba85a3a2c4fbeabe1``). It could not be checked from the machine this was written
on, which has no route to the Hub: the first fetch with network access proves it (the file layout at that
commit is read as found: every .json, .jsonl and .parquet file).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from coordset.errors import CoordsetError
from coordset.records import BadRecord, SkipLog
from coordset.sources import local_mallm
from coordset.sources.episode import Episode
from coordset.sources.local_files import Record, file_key, read_records, record_files
from coordset.sources.registry import HubRevision, Source, SourceData, add_episodes, hub_revision, max_episodes

NAME = "debate"
DEBATE_FILES = ["*.json", "*.jsonl", "*.parquet"]  # the records; not the README or .gitattributes


def _advice(repo_id: str) -> str:
    return (f"The fetch stage needs network access to huggingface.co for source {NAME}: unset HF_HUB_OFFLINE, "
            "check the connection (or HTTPS_PROXY), and if the Hub refuses or rate-limits anonymous downloads "
            "create a read token at https://huggingface.co/settings/tokens and export HF_TOKEN=<token>. Or "
            f"remove {NAME} from sources.use in params.yaml. (https://huggingface.co/datasets/{repo_id})")


def fetch_debate(out_dir: Path, *, repo_id: str, revision: str) -> str:
    """Download the record files of ``repo_id`` at ``revision``; return (and record in REVISION) the commit read."""
    token = os.environ.get("HF_TOKEN") or None
    try:
        from huggingface_hub import HfApi, snapshot_download

        sha = HfApi(token=token).dataset_info(repo_id, revision=revision).sha or revision
        snapshot_download(repo_id, repo_type="dataset", revision=sha, allow_patterns=DEBATE_FILES,
                          local_dir=out_dir, token=token)
    except Exception as exc:  # offline mode, no route, 401/404/429: all end in the same advice
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CoordsetError(f"source {NAME}: cannot download {repo_id}@{revision} from the Hugging Face Hub "
                            f"({type(exc).__name__}: {first}). {_advice(repo_id)}") from None
    # huggingface_hub keeps download metadata (with times) under local_dir/.cache: not part of the data.
    shutil.rmtree(out_dir / ".cache", ignore_errors=True)
    (out_dir / "REVISION").write_text(f"{sha}\n", encoding="utf-8")
    return sha


@dataclass(frozen=True)
class Settings:
    hub: HubRevision
    max_episodes: int | None = None


def source_settings(params: dict[str, Any]) -> Settings:
    return Settings(hub_revision(params, NAME), max_episodes(params, NAME))


def fetch(out_dir: Path, settings: Settings) -> None:
    fetch_debate(out_dir, repo_id=settings.hub.repo_id, revision=settings.hub.revision)


def _episode(ref: Record, record: dict[str, Any]) -> Episode:
    episode = local_mallm.episode(ref, record, NAME, f"{NAME}/{ref.file_key}/{record.get('exampleId')}", language="en")
    return replace(episode, subset=ref.file_key)  # the file is the debate configuration


def read(raw: Path, settings: Settings, skips: SkipLog) -> SourceData:
    data = SourceData()
    if not raw.is_dir():
        skips.handle(NAME, BadRecord(str(raw), f"no downloaded files: run the fetch stage with network access. "
                                               f"{_advice(settings.hub.repo_id)}", "missing_file"))
        return data
    for path in record_files(raw):
        if not add_episodes(data, read_records(path, file_key(raw, path)), _episode, NAME, skips,
                            settings.max_episodes):
            break
    return data


SOURCE = Source(
    name=NAME,
    title="D-MAD: multi-agent debates run with MALLM (personas, paradigms, decision protocols), with each "
          "agent's visible memory and the decision protocol's success",
    licence="Apache-2.0",
    hf_license="apache-2.0",
    homepage="https://huggingface.co/datasets/Multi-Agent-LLMs/DEBATE",
    settings=source_settings,
    fetch=fetch,
    read=read,
    billing="logged_prompt",
    native_labels=("decision_success", "agreement"),
    success_outcomes=("success",),
    turn="a discussion turn: every agent speaks once (MALLM's turn); the task is turn 1's first message",
    card="D-MAD (Multi-Agent-LLMs/DEBATE, the MALLM paper's dataset) holds debates of LLM agents with generated "
         "personas on question-answering tasks, run with MALLM under several discussion paradigms and decision "
         "protocols. Each record is one episode: the task as a user message, then every agent message of the "
         "discussion in order. An agent's call is billed for the task and the messages MALLM's memory ids say it "
         "was shown (its persona description and prompt template are not logged, so this is a lower bound). The "
         "outcome is `success` when the decision protocol reached a decision within the turn limit and `failure` "
         "when it did not; it does not say whether the answer is right. Each message's agreement with the "
         "current draft is an `agreement` turn event, the final answer a `final_answer` event. The subset is the "
         "file (configuration) a record came from; the commit read is in data/raw/debate/REVISION.",
)
