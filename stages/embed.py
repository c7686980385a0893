"""embed: every distinct message text -> data/embeddings/embeddings.parquet (does not depend on rank).

Under ``numerics: portable`` (the default) the bytes are the same on any x86-64 CPU with AVX2, for any
batch size and thread count; nothing here may import torch before ``embed_messages`` pins its kernels.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow

from coordset import atomic
from coordset.embedding import embed_messages, embed_settings
from coordset.params import load_params
from schemas import check
from schemas.embeddings import EMBEDDINGS
from stages._entry import run

MESSAGES = Path("data/normalized/messages.parquet")
OUT = Path("data/embeddings/embeddings.parquet")


def read_distinct(path: Path) -> pd.DataFrame:
    """The first message of each distinct text: all the stage embeds (a text's rows are all the same text)."""
    distinct = pd.read_parquet(path, columns=["text", "text_sha256"]).drop_duplicates("text_sha256")
    # The whole table's Arrow buffers go back to the OS before the model loads: ~450 MiB of the stage's peak
    # memory on the 37,200-episode set.
    pyarrow.default_memory_pool().release_unused()
    return distinct


def main() -> None:
    settings = embed_settings(load_params())
    table = embed_messages(read_distinct(MESSAGES), settings)
    atomic.write_parquet(OUT, check(table, EMBEDDINGS, str(OUT)))


if __name__ == "__main__":
    run(main)
