"""Chatbot Arena conversations (lmsys, gated on the Hugging Face Hub): two models, one human vote."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from coordset.records import SkipLog
from coordset.sources.arena import read_arena
from coordset.sources.hub import fetch_chatbot_arena
from coordset.sources.registry import HubRevision, Source, SourceData, hub_revision

NAME = "chatbot_arena"


def fetch(out_dir: Path, settings: HubRevision) -> None:
    fetch_chatbot_arena(out_dir, repo_id=settings.repo_id, revision=settings.revision)


def read(raw: Path, settings: HubRevision, skips: SkipLog) -> SourceData:
    return read_arena(raw, NAME, skips)


SOURCE = Source(
    name=NAME,
    title="Chatbot Arena conversations with pairwise human votes (33K, April-June 2023)",
    licence="CC-BY-4.0 (user prompts) and CC-BY-NC-4.0 (model outputs)",
    homepage="https://huggingface.co/datasets/lmsys/chatbot_arena_conversations",
    settings=partial(hub_revision, source=NAME),
    fetch=fetch,
    read=read,
    billing="own_thread",
    parallel=True,
    native_labels=("human_vote",),
    card="Gated on the Hugging Face Hub (licence tag `cc`): access requires accepting lmsys's terms (no attempt to "
         "identify individuals, follow each model's terms of use for its outputs; the conversations may be "
         "unsafe or offensive). The model outputs are non-commercial: a release containing this source is "
         "not usable commercially. The outcome is the human vote.",
)
