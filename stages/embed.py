"""embed: every distinct message text -> data/embeddings/embeddings.parquet (does not depend on rank)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from coordset import atomic
from coordset.embedding import embed_settings, embedding_table, load_model
from coordset.params import load_params
from schemas import check
from schemas.embeddings import EMBEDDINGS
from stages._entry import run

MESSAGES = Path("data/normalized/messages.parquet")
OUT = Path("data/embeddings/embeddings.parquet")


def main() -> None:
    settings = embed_settings(load_params())
    messages = pd.read_parquet(MESSAGES, columns=["text", "text_sha256"])
    table = embedding_table(messages, load_model(settings), settings)
    atomic.write_parquet(OUT, check(table, EMBEDDINGS, str(OUT)))


if __name__ == "__main__":
    run(main)
