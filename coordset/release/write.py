"""The published dataset: every stage's output joined into one Parquet row and one JSON line per episode.

Inputs are the normalized episodes and messages, the enriched token usage, the latent states and the
label tables; each is checked against its own schema when read, and every episode must be covered by
each of them exactly (missing or unknown episodes, or a turn count that differs from ``n_turns``, stop
the build naming the file). Episodes are processed in sorted chunks: each chunk is validated against
``schemas.release`` and then appended to the Parquet file (one row group) and the JSONL file (one line
per episode), both written through :func:`coordset.atomic.atomic_path`, so the 37,200-episode set needs
only one chunk's Python objects in memory and a failed build replaces nothing.

The bytes repeat: rows are sorted, JSON has sorted keys and Python's shortest float repr (float32 latent
values are written with their own shortest repr), and nothing depends on the clock or the machine; the
only date is each episode's own latest timestamp.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow
import pyarrow.parquet as pq

from coordset import atomic
from coordset.errors import CoordsetError
from coordset.release.inputs import ReleaseInputs
from coordset.release.record import RecordContext, episode_record, json_line, latent_error_metrics
from coordset.release.rows import CHUNK_EPISODES, EpisodeJoiner
from coordset.release.settings import CARD, JSONL, OUT_DIR, PARQUET, ReleaseSettings, ReleaseSummary
from schemas import check
from schemas.release import LLM_PREFIX, RECORD_KEYS, arrow_schema, missing_keys, release_schema


def llm_arrow_types(labels: pd.DataFrame) -> dict[str, pyarrow.DataType]:
    """Arrow types of the llm_ columns, from the whole table (a chunk may be all null); all-null -> string."""
    columns = sorted(c for c in labels if c.startswith(LLM_PREFIX))
    if not columns:
        return {}
    types = pyarrow.Table.from_pandas(labels[columns], preserve_index=False).schema
    return {f.name: pyarrow.string() if pyarrow.types.is_null(f.type) else f.type for f in types}


def write_release(inputs: ReleaseInputs, settings: ReleaseSettings, out_dir: Path = OUT_DIR,
                  chunk_size: int = CHUNK_EPISODES,
                  render_card: Callable[[ReleaseSummary], str] | None = None) -> ReleaseSummary:
    """Write coordset.parquet and coordset.jsonl chunk by chunk, each chunk schema-checked before it is written,
    and, with ``render_card``, README.md from their summary. No file is replaced unless all of them are done."""
    schema = arrow_schema(llm_arrow_types(inputs.episode_labels))
    checked = release_schema(settings.rank)
    ctx = RecordContext(settings, latent_error_metrics(inputs.metrics.get("latent", {})))
    summary = ReleaseSummary(schema=schema)
    parquet_path, jsonl_path = out_dir / PARQUET, out_dir / JSONL
    with atomic.atomic_path(parquet_path) as parquet_tmp, atomic.atomic_path(jsonl_path) as jsonl_tmp:
        with pq.ParquetWriter(parquet_tmp, schema, compression="zstd") as writer, \
                open(jsonl_tmp, "w", encoding="utf-8", newline="\n") as lines:
            for frame in EpisodeJoiner(inputs).chunks(chunk_size):
                check(frame, checked, str(parquet_path))
                table = pyarrow.Table.from_pandas(frame, schema=schema, preserve_index=False)
                writer.write_table(table.replace_schema_metadata(None))
                for row in frame.to_dict("records"):
                    record = episode_record(row, ctx)
                    missing = missing_keys(record, RECORD_KEYS)
                    if missing:  # a guard on this module's own code: the shape is the published contract
                        raise CoordsetError(f"{jsonl_path}: record {row['episode_id']!r} lacks {missing}")
                    lines.write(json_line(record))
                summary.add(frame)
        if render_card is not None:
            atomic.write_text(out_dir / CARD, render_card(summary))
    return summary
