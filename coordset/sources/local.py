"""A researcher's own multi-agent logs under ``sources.local.path``, read in place (a DVC dependency of normalize).

``sources.local.path`` is a file or a folder (every ``.jsonl``, ``.json`` and ``.parquet`` file under it,
sorted; see ``coordset.sources.local_files``). ``sources.local.format`` says what the files hold:

- ``arena``: Chatbot-Arena records, two models answering the same user turns (``coordset.sources.arena``);
- ``n_speaker``: N-speaker conversations, the JSON Schema in ``coordset.sources.local_nspeaker``;
- ``autogen``: AutoGen / AG2 group-chat histories (``coordset.sources.local_autogen``);
- ``mallm``: MALLM discussion records (``coordset.sources.local_mallm``);
- ``auto`` (the default): each file's format from the keys of its first record (``local_files.FORMAT_RULES``);
  a file that matches no rule, or several, stops the run naming the file (or is skipped and counted).

Every record is validated; a bad one stops the run naming its file, line (or record, or row) and field, or
with ``normalize.on_bad_record: skip`` (or ``sources.local.on_bad_record``) is skipped and counted by reason.

Arena records are head-to-head: billed by the arena rule ``own_thread`` (the source's default). The other
formats are conversations among agents, so their episodes say so themselves (``Episode.billing`` and
``Episode.parallel``): each call is billed for the prompt the file gives for it (MALLM: exactly the messages
its memory ids list) and otherwise for the shared history (``logged_prompt``), and their outcome is the
file's own (``success`` counts as coordination success).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from coordset.params import has, require_choice, require_str
from coordset.records import BadRecord, SkipLog
from coordset.sources import local_autogen, local_mallm, local_nspeaker
from coordset.sources.arena_records import arena_conversation
from coordset.sources.episode import Episode
from coordset.sources.local_files import Record, detect_format, file_key, read_records, record_files
from coordset.sources.parallel import parallel_episode
from coordset.sources.registry import Source, SourceData, add_episodes

NAME = "local"
FORMATS = ("auto", "arena", "n_speaker", "autogen", "mallm")


@dataclass(frozen=True)
class Settings:
    path: Path  # a file, or a folder of record files
    format: str = "auto"  # one of FORMATS


def source_settings(params: dict[str, Any]) -> Settings:
    """``sources.local.path`` and ``.format`` (``auto`` when the key is absent, as in params files older than it)."""
    key = f"sources.{NAME}.format"
    return Settings(Path(require_str(params, f"sources.{NAME}.path")),
                    require_choice(params, key, FORMATS) if has(params, key) else "auto")


def location(settings: Settings) -> Path:
    return settings.path


def _episode(fmt: str, ref: Record, record: dict[str, Any]) -> Episode:
    if fmt == "arena":
        return parallel_episode(arena_conversation(record, ref.where, NAME), ref.where)
    if fmt == "n_speaker":
        episode = local_nspeaker.episode(ref, record, NAME)
    elif fmt == "autogen":
        episode = local_autogen.episode(ref, record, NAME)
    else:
        episode = local_mallm.episode(ref, record, NAME, f"{NAME}/{ref.file_key}/{record.get('exampleId')}")
    # A conversation among agents: billed for what each agent saw, not by the arena rule.
    return replace(episode, billing="logged_prompt", parallel=False)


def read(path: Path, settings: Settings, skips: SkipLog) -> SourceData:
    fmt = settings.format
    data = SourceData()
    if not path.exists():
        skips.handle(NAME, BadRecord(str(path), "file not found", "missing_file"))
        return data
    for file in record_files(path):
        records = read_records(file, file_key(path, file))
        try:
            file_format = detect_format(records, file) if fmt == "auto" else fmt
        except BadRecord as exc:
            skips.handle(NAME, exc)  # the whole file: stop, or skip it and count it once
            continue
        add_episodes(data, records, partial(_episode, file_format or fmt), NAME, skips)
    return data


SOURCE = Source(
    name=NAME,
    title="The researcher's own logs (sources.local.path): arena records, N-speaker conversations, AutoGen/AG2 "
          "histories or MALLM discussions",
    licence="the researcher's own",
    homepage="data/local/README.md",
    settings=source_settings,
    location=location,
    read=read,
    billing="own_thread",  # arena records; conversations among agents say otherwise per episode
    parallel=True,
    native_labels=("human_vote",),
    success_outcomes=("success", "pass", "correct"),
    turn="by format: arena, a user turn and both replies; N-speaker, each message (or the file's own turns); "
         "AutoGen, each history entry; MALLM, a discussion turn",
    card="Whoever builds with local data sets its licence; check it before publishing. Arena records: two models "
         "answer the same user turns and the outcome is the recorded vote. N-speaker conversations: the file's "
         "agents, messages (with private reasoning where given), outcome and turn events. AutoGen/AG2 histories: "
         "one message per history entry, code terminals as tools, Who&When-style human failure labels where "
         "present. MALLM discussions: personas as agents, globalMemory as messages, decisionSuccess as the outcome "
         "(success/failure by the decision protocol, not answer correctness) and per-message agreement as turn "
         "events. This source bills every call by the arena rule (the user turns and the agent's own messages), "
         "which undercounts what agents in a group chat re-read.",
)
