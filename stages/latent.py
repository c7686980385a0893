"""latent: embeddings -> per-turn latent states (data/latent/), the fitted model, metrics/latent.json."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from coordset import atomic
from coordset.latent import build_sequences, check_rank, latent_settings, split_groups
from coordset.latent.metrics import (
    compression,
    explained_variance,
    mse,
    next_step_pairs,
    no_memory_same_rank,
    outcome_categories,
    pca_baseline,
    winner_probe,
)
from coordset.latent.model import predict, train
from coordset.params import load_params
from schemas import check, read_checked
from schemas.embeddings import EMBEDDINGS
from schemas.latent import latent_states
from schemas.normalized import EPISODES, OUTCOMES
from stages._entry import run

EPISODES_PATH = Path("data/normalized/episodes.parquet")
OUTCOMES_PATH = Path("data/normalized/outcomes.parquet")
MESSAGES = Path("data/normalized/messages.parquet")
TOKENS = Path("data/enriched/messages.parquet")
EMBEDDINGS_PATH = Path("data/embeddings/embeddings.parquet")
OUT = Path("data/latent/latent_states.parquet")
MODEL = Path("models/latent_model.pt")


def read_messages(path: Path) -> pd.DataFrame:
    """Messages without their text (the large column), plus each text's UTF-8 size for the compression figures."""
    table = pq.read_table(path)
    n_bytes = pc.binary_length(table["text"])
    return table.drop_columns(["text"]).append_column("n_bytes", n_bytes).to_pandas()


def main() -> None:
    settings = latent_settings(load_params())  # bad params fail here, before any data is read
    episodes = read_checked(EPISODES_PATH, EPISODES).sort_values("episode_id").reset_index(drop=True)
    messages = read_messages(MESSAGES)
    embeddings = read_checked(EMBEDDINGS_PATH, EMBEDDINGS)
    check_rank(settings, len(embeddings["embedding"].iloc[0]))
    seq = build_sequences(episodes, messages, embeddings)
    split_of = split_groups(episodes["group_id"], settings.holdout_fraction, settings.seed)
    splits = episodes["group_id"].map(split_of).to_numpy()
    train_rows, held_rows = np.flatnonzero(splits == "train"), np.flatnonzero(splits == "heldout")
    fit = train(seq, train_rows, held_rows, settings)
    states, _, _ = predict(fit.model, seq, readouts=False)
    _, held_recon_all, held_next = predict(fit.model, seq, held_rows)

    rows = []
    for e, eid in enumerate(seq.episode_ids):
        for turn, last in seq.turn_ends[e]:
            rows.append({"episode_id": eid, "turn": turn, "split": splits[e],
                         "latent": states[e, last].astype(np.float32)})
    table = check(pd.DataFrame(rows), latent_states(settings.rank), str(OUT))

    mask = seq.mask
    train_x = seq.embeddings[train_rows][mask[train_rows]]
    held_x = seq.embeddings[held_rows][mask[held_rows]]
    held_recon = held_recon_all[mask[held_rows]]
    actual, predicted, current = next_step_pairs(seq.embeddings[held_rows], held_next, mask[held_rows])
    train_emb = seq.embeddings[train_rows]
    train_next, _, train_current = next_step_pairs(train_emb, train_emb, mask[train_rows])
    final = np.stack([states[e, seq.turn_ends[e][-1][1]] for e in range(len(seq.episode_ids))])
    outcomes = outcome_categories(episodes, read_checked(OUTCOMES_PATH, OUTCOMES))
    questions = episodes["group_id"].to_numpy()
    # The probe is scored on held-out questions; over all episodes too (5x the data, still grouped by
    # question, but there the latent model has seen the texts of the training questions).
    probe_all = winner_probe(final, outcomes, questions, settings.probe_folds, settings.seed)
    metrics = {
        "rank": settings.rank,
        "cell": settings.cell,
        "heldout_episodes": int(len(held_rows)),
        "heldout_messages": int(len(held_x)),
        "reconstruction_error": mse(held_x, held_recon),
        "explained_variance": explained_variance(held_x, held_recon, train_x.mean(axis=0)),
        **pca_baseline(train_x, held_x, settings.rank, settings.seed),
        "next_step_error": mse(actual, predicted),
        "next_step_error_no_memory": mse(actual, current),
        "next_step_error_no_memory_same_rank": no_memory_same_rank(train_current, train_next, current, actual,
                                                                   settings.rank, settings.seed),
        **winner_probe(final[held_rows], outcomes[held_rows], questions[held_rows], settings.probe_folds,
                       settings.seed),
        "probe_accuracy_all_episodes": probe_all["probe_accuracy"],
        "probe_majority_rate_all_episodes": probe_all["probe_majority_rate"],
        **compression(messages, pd.read_parquet(TOKENS), settings.rank),
    }
    metrics["compression_ratio"] = metrics["compression_ratio_bytes"]

    buffer = io.BytesIO()
    torch.save({"state_dict": fit.model.state_dict(), "settings": settings.__dict__,
                "embedding_dim": int(seq.embeddings.shape[-1]), "role_dim": int(seq.roles.shape[-1])}, buffer)
    atomic.write_parquet(OUT, table)
    atomic.write_bytes(MODEL, buffer.getvalue())
    atomic.write_json("metrics/latent.json", {k: round(v, 6) if isinstance(v, float) else v
                                              for k, v in metrics.items()})
    atomic.write_text("metrics/latent_loss.csv", pd.DataFrame(fit.history).to_csv(index=False))
    atomic.write_text("metrics/latent_rank.csv", pd.DataFrame([{
        "rank": settings.rank, "explained_variance": round(metrics["explained_variance"], 6),
        "pca_explained_variance": round(metrics["pca_explained_variance"], 6)}]).to_csv(index=False))


if __name__ == "__main__":
    run(main)
