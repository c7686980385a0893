"""What the project knows about a source, in one object: pins, reader, licence, card text, capabilities.

Each source is one module in ``coordset/sources/`` that defines ``SOURCE = Source(...)``;
``coordset.sources.REGISTRY`` lists them. Fetch, normalize, enrich, label, release and the dataset
card read these objects and nothing else about a source.

A source's params (``sources.<name>.*``) are checked once, by ``Source.settings``, into a small frozen
settings object before any file is read; its fetch, file choice, location and reader take that object,
never the raw params.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import schemas.normalized
from coordset.errors import ParamError
from coordset.fetch import Pinned, fetch_pinned, read_pins
from coordset.params import get, require_str
from coordset.records import BadRecord, SkipLog, json_object
from coordset.sources.episode import Episode
from coordset.sources.local_files import Record

PINS_DIR = Path(__file__).resolve().parent.parent / "pins"

# How an agent's call is billed (enrich): what that agent actually saw.
#   own_thread:     the user turns so far and the agent's own earlier replies (agents answer in parallel)
#   shared_history: every earlier message of the episode, as a group-chat framework re-sends it
#   logged_prompt:  that call's prompt, logged by the framework or rebuilt from its log (else shared_history)
BILLING = tuple(schemas.normalized.BILLING)


@dataclass
class SourceData:
    """What a reader returns: episodes, plus imported judge verdicts and grades where a source has them."""

    episodes: list[Episode] = field(default_factory=list)
    judge_verdicts: list[dict[str, Any]] = field(default_factory=list)
    judge_grades: list[dict[str, Any]] = field(default_factory=list)


# read(raw_dir, settings, skips) -> SourceData. raw_dir is data/raw/<source> (or the local path); settings is
# what the source's own ``settings(params)`` built (each source types its own, hence Any here); bad records go
# through skips.handle(source, BadRecord) so the run stops or skips and counts them.
Reader = Callable[[Path, Any, SkipLog], SourceData]


def no_settings(params: dict[str, Any]) -> None:
    """For a source without params."""
    return None


@dataclass(frozen=True)
class Limit:
    """The settings of a source whose only param is ``max_episodes``."""

    max_episodes: int | None = None  # None: every episode; N: the first N (tests, small builds)


@dataclass(frozen=True)
class Source:
    name: str
    title: str  # one line for tables and the card
    licence: str  # SPDX id, or a sentence where there is none
    homepage: str
    card: str  # Markdown paragraph(s) for the dataset card: what it is, how episodes and outcomes are made
    read: Reader
    billing: str  # one of BILLING
    hf_license: str | None = None  # the Hugging Face Hub licence id, when one id covers the source
    settings: Callable[[dict[str, Any]], Any] = no_settings  # params -> this source's checked settings
    fetch: Callable[[Path, Any], None] | None = None  # custom fetch into a folder (e.g. from the Hub)
    location: Callable[[Any], Path] | None = None  # read in place from here instead of data/raw/<name>
    base_url: str | None = None  # pinned upstream (a commit in the URL); None: fetched otherwise or read in place
    choose_files: Callable[[dict[str, str], Any], dict[str, str]] | None = None  # pins -> the ones the settings need
    parallel: bool = False  # agents answer the same user turns independently (head-to-head)
    judges: bool = False  # imports pairwise judge verdicts
    grades: bool = False  # imports 1-10 grades
    native_labels: tuple[str, ...] = ()  # e.g. ("mistake_agent", "mistake_step")
    success_outcomes: tuple[str, ...] = ()  # outcome labels that mean the agents coordinated successfully
    turn: str = "a user turn and the agents' replies to it"  # what `turn` means for this source

    @property
    def pin_file(self) -> Path:
        return PINS_DIR / f"{self.name}.sha256"

    @property
    def revision(self) -> str | None:
        """The pinned upstream commit, read from a raw.githubusercontent.com base URL."""
        if self.base_url and "githubusercontent.com/" in self.base_url:
            return self.base_url.split("githubusercontent.com/")[1].strip("/").split("/")[2]
        return None

    def checked(self, settings: Any) -> Any:
        """``settings`` as they are, or built from them when they are the raw params (a dict, as tests hold them)."""
        return self.settings(settings) if isinstance(settings, dict) else settings

    def pinned_files(self, pins: dict[str, str], settings: Any) -> dict[str, str]:
        """The pinned files these settings need (all of them unless the source chooses)."""
        return self.choose_files(pins, self.checked(settings)) if self.choose_files else pins

    def fetch_into(self, out_dir: Path, settings: Any, *, mirror: Path | None, progress: bool = False) -> None:
        """Put the source's files under ``out_dir``: pinned files verified by sha256, or the source's own fetch."""
        settings = self.checked(settings)
        if self.fetch is not None:
            self.fetch(out_dir, settings)
        elif self.base_url is not None:
            files = self.pinned_files(read_pins(self.pin_file), settings)
            fetch_pinned(Pinned(self.name, self.base_url, self.pin_file), files, out_dir, mirror=mirror,
                         progress=progress)

    def raw_dir(self, raw_root: Path, settings: Any) -> Path:
        return self.location(settings) if self.location is not None else raw_root / self.name


@dataclass(frozen=True)
class SourceUse:
    """A source named in ``sources.use``, with the settings its params were checked into (once)."""

    source: Source
    settings: Any  # what ``source.settings(params)`` built
    on_bad_record: str | None = None  # ``sources.<name>.on_bad_record``; None: the run's ``normalize.on_bad_record``


def max_episodes(params: dict[str, Any], source: str) -> int | None:
    """``sources.<source>.max_episodes``: null for every episode, else keep the first N (tests, small builds)."""
    key = f"sources.{source}.max_episodes"
    value = get(params, key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ParamError(key, f"must be null or an integer >= 1, got {value!r}")
    return value


@dataclass(frozen=True)
class HubRevision:
    """A Hugging Face Hub dataset at a revision (a branch or a commit): ``sources.<name>.repo_id`` / ``.revision``."""

    repo_id: str
    revision: str


def hub_revision(params: dict[str, Any], source: str) -> HubRevision:
    return HubRevision(require_str(params, f"sources.{source}.repo_id"),
                       require_str(params, f"sources.{source}.revision"))


def limit(params: dict[str, Any], source: str) -> Limit:
    """A source's ``Limit`` from ``sources.<source>.max_episodes``."""
    return Limit(max_episodes(params, source))


def episodes_from_json_files(files: list[tuple[Path, Callable[[dict[str, Any], str], Episode]]], raw: Path,
                             source: str, limit: int | None, skips: SkipLog) -> SourceData:
    """One episode per JSON file, in the given order, up to ``limit``: ``build(record, where)`` makes it.

    ``where`` is the file's path under ``raw``; a file that is not a JSON object, or that ``build`` refuses,
    stops the run or is skipped and counted.
    """
    data = SourceData()
    for path, build in files:
        if limit is not None and len(data.episodes) >= limit:
            break
        where = path.relative_to(raw).as_posix()
        try:
            data.episodes.append(build(json_object(path.read_bytes(), where), where))
        except BadRecord as exc:
            skips.handle(source, exc)
    return data


def add_episodes(data: SourceData, records: Iterable[Record], build: Callable[[Record, dict[str, Any]], Episode],
                 source: str, skips: SkipLog, limit: int | None = None) -> bool:
    """Add ``build(ref, record)`` to ``data`` for each record of a file, until ``data`` holds ``limit`` episodes.

    A record that could not be read, or that ``build`` refuses, stops the run or is skipped and counted.
    Returns False once the limit is reached, so the caller reads no further file.
    """
    for ref in records:
        if limit is not None and len(data.episodes) >= limit:
            return False
        try:
            if isinstance(ref.data, BadRecord):
                raise ref.data
            data.episodes.append(build(ref, ref.data))
        except BadRecord as exc:
            skips.handle(source, exc)
    return True
