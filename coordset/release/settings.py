"""What a release is built with and what it reports: its settings (checked before any data is read),
the names of its files, and the summary the dataset card is written from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow

from coordset.errors import ParamError
from coordset.labels.rules import Thresholds, read_thresholds
from coordset.latent import LatentSettings, latent_settings
from coordset.params import require_bool, require_int, require_names, require_str

OUT_DIR = Path("data/release")
PARQUET, JSONL, CARD = "coordset.parquet", "coordset.jsonl", "README.md"


@dataclass(frozen=True)
class ReleaseSettings:
    annotation_version: str
    rank: int
    cell: str
    thresholds: Thresholds
    llm_enabled: bool
    llm_models: tuple[str, ...] | None  # the top-level `model`, when LLM labels are on
    latent: LatentSettings
    embed_model: str
    embed_long_text: str
    embed_backend: str
    encoding: str
    tokens_per_message: int
    tokens_per_reply: int


def release_settings(params: dict[str, Any]) -> ReleaseSettings:
    """Check every param the release reads, before any data is read."""
    version = require_str(params, "release.annotation_version")
    if version != version.strip():
        raise ParamError("release.annotation_version", f"must not start or end with spaces, got {version!r}")
    latent = latent_settings(params)
    llm_enabled = require_bool(params, "label.llm.enabled")
    return ReleaseSettings(
        annotation_version=version,
        rank=latent.rank,
        cell=latent.cell,
        thresholds=read_thresholds(params),
        llm_enabled=llm_enabled,
        llm_models=require_names(params, "model") if llm_enabled else None,
        latent=latent,
        embed_model=require_str(params, "embed.model"),
        embed_long_text=require_str(params, "embed.long_text"),
        embed_backend=require_str(params, "embed.backend"),
        encoding=require_str(params, "enrich.encoding"),
        tokens_per_message=require_int(params, "enrich.tokens_per_message", low=0),
        tokens_per_reply=require_int(params, "enrich.tokens_per_reply", low=0),
    )



@dataclass
class ReleaseSummary:
    """What the card reports about the written files."""

    rows: int = 0
    schema: pyarrow.Schema | None = None
    sources: dict[str, int] = field(default_factory=dict)
    languages: dict[str, int] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)
    first_date: str | None = None
    last_date: str | None = None
    undated: int = 0

    def add(self, frame: pd.DataFrame) -> None:
        self.rows += len(frame)
        for name, column in (("sources", "source"), ("languages", "language"), ("splits", "latent_split")):
            counts = getattr(self, name)
            for key, n in frame[column].value_counts().items():
                counts[str(key)] = counts.get(str(key), 0) + int(n)
        dates = frame["date"].dropna()
        self.undated += int(frame["date"].isna().sum())
        if len(dates):
            self.first_date = min(filter(None, [self.first_date, dates.min()]))
            self.last_date = max(filter(None, [self.last_date, dates.max()]))


