"""embed: every distinct message text -> data/embeddings/embeddings.parquet (does not depend on rank).

Under ``numerics: portable`` (the default) the bytes are the same on any x86-64 CPU with AVX2, for any
batch size and thread count; nothing here may import torch before ``embed_messages`` pins its kernels.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from coordset import atomic
from coordset.embedding import embed_messages, embed_settings
from coordset.params import load_params
from schemas import check
from schemas.embeddings import EMBEDDINGS
from stages._entry import run

MESSAGES = Path("data/normalized/messages.parquet")
OUT = Path("data/embeddings/embeddings.parquet")


def main() -> None:
    settings = embed_settings(load_params())
    messages = pd.read_parquet(MESSAGES, columns=["text", "text_sha256"])
    table = embed_messages(messages, settings)
    atomic.write_parquet(OUT, check(table, EMBEDDINGS, str(OUT)))


if __name__ == "__main__":
    run(main)
