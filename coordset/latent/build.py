"""The latent stage's work: train the coordinator on fold 0, cross-fit the other folds, evaluate, read out.

``read_latent_inputs`` reads and validates the tables; ``build_latent`` returns every table, model and metric
the stage writes (the stage only writes them).
"""

from __future__ import annotations

import io
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch
from threadpoolctl import threadpool_limits

from coordset.latent import LatentSettings, Sequences, assign_folds, build_sequences, check_rank
from coordset.latent.evaluation import EpisodeLabels, FoldFit, Pooled, by_source, deal_curve, fit_fold, run_probes
from coordset.latent.metrics import (
    compression,
    explained_variance,
    mse,
    no_memory_same_rank,
    outcome_categories,
    pca_baseline,
    winner_probe,
)
from schemas import check, read_checked
from schemas.embeddings import EMBEDDINGS
from schemas.enriched import MESSAGE_TOKENS
from schemas.latent import latent_states
from schemas.normalized import EPISODES, MESSAGES, OUTCOMES

EPISODES_PATH = Path("data/normalized/episodes.parquet")
OUTCOMES_PATH = Path("data/normalized/outcomes.parquet")
MESSAGES_PATH = Path("data/normalized/messages.parquet")
TOKENS_PATH = Path("data/enriched/messages.parquet")
EMBEDDINGS_PATH = Path("data/embeddings/embeddings.parquet")
STATES = "data/latent/latent_states.parquet"
DEAL_CURVE_COLUMNS = ["round", "episodes", "latent_accuracy", "memoryless_accuracy", "prior_accuracy"]
# metrics/latent_loss.csv: the published fit's validation pass per epoch (train loss on the training groups
# minus the validation groups), then the refit's train loss on all training groups for the chosen epochs.
LOSS_COLUMNS = ["epoch", "train_loss", "validation_loss", "validation_reconstruction", "validation_next",
                "refit_train_loss"]
# metrics/latent_rank.csv: one row per source at this build's rank; each `dvc exp run -S rank=...` writes its
# own, so `dvc plots diff` over the rank experiments draws every source's figures against the rank.
RANK_COLUMNS = ["source", "rank", "explained_variance", "pca_explained_variance", "explained_variance_share_of_pca",
                "next_message_error", "memoryless_ridge_error", "next_message_gain_over_ridge"]


@dataclass
class LatentInputs:
    episodes: pd.DataFrame    # sorted by episode_id
    messages: pd.DataFrame    # without their text, plus its UTF-8 size
    embeddings: pd.DataFrame
    outcomes: pd.DataFrame
    tokens: pd.DataFrame      # enriched messages (token counts)


@dataclass
class LatentOutputs:
    states: pd.DataFrame      # checked against latent_states(rank)
    model_pt: bytes           # torch.save of the published model, its ridge read-outs and settings
    metrics: dict[str, Any]
    loss: pd.DataFrame
    rank_rows: pd.DataFrame   # metrics/latent_rank.csv: per source, model vs baselines (``rank_rows``)
    deal_curve: pd.DataFrame


def read_latent_inputs() -> LatentInputs:
    return LatentInputs(
        episodes=read_checked(EPISODES_PATH, EPISODES).sort_values("episode_id").reset_index(drop=True),
        messages=read_messages(MESSAGES_PATH),
        embeddings=read_checked(EMBEDDINGS_PATH, EMBEDDINGS),
        outcomes=read_checked(OUTCOMES_PATH, OUTCOMES),
        tokens=read_checked(TOKENS_PATH, MESSAGE_TOKENS),
    )


def read_messages(path: Path) -> pd.DataFrame:
    """Messages, checked (the text too), without their text (the large column), plus each text's UTF-8 size for
    the compression figures."""
    messages = read_checked(path, MESSAGES)
    # large_string, as the file stores the text: the byte lengths are int64, as they always were.
    n_bytes = pc.binary_length(pa.array(messages.pop("text"), type=pa.large_string()))
    return messages.assign(n_bytes=n_bytes.to_pandas())


def episode_labels(episodes: pd.DataFrame, outcomes: pd.DataFrame) -> EpisodeLabels:
    by_id = outcomes.set_index("episode_id").reindex(episodes["episode_id"])
    steps = by_id["mistake_step"].astype("Int64").fillna(-1).to_numpy().astype(int)
    agents = np.array([None if pd.isna(a) else str(a) for a in by_id["mistake_agent"]], dtype=object)
    return EpisodeLabels(winner=outcome_categories(episodes, outcomes), deal=by_id["outcome"].to_numpy().astype(object),
                         mistake_step=steps, mistake_agent=agents)


def build_latent(inputs: LatentInputs, settings: LatentSettings) -> LatentOutputs:
    """Everything the latent stage writes, from its inputs and settings."""
    episodes, messages, embeddings, outcomes, tokens = (inputs.episodes, inputs.messages, inputs.embeddings,
                                                        inputs.outcomes, inputs.tokens)
    check_rank(settings, len(embeddings["embedding"].iloc[0]))
    seq = build_sequences(episodes, messages, embeddings)
    groups = episodes["group_id"].to_numpy().astype(object)
    fold_of = assign_folds(episodes["group_id"], episodes["source"], settings.holdout_fraction, settings.seed,
                           settings.eval_folds)
    folds = episodes["group_id"].map(fold_of).to_numpy()
    splits = np.where(folds == 0, "heldout", "train")
    source_index = {s: i for i, s in enumerate(sorted(set(episodes["source"])))}
    labels = episode_labels(episodes, outcomes)
    pooled = Pooled(len(seq.embeddings))

    started = time.perf_counter()
    with threadpool_limits(1):  # one BLAS thread too: frugal on shared machines, and the same sums every run
        main_fit = fit_fold(seq, groups, folds == 0, settings, source_index, progress=True, desc="latent: train")
        pooled.add(seq, main_fit)
        run_probes(seq, main_fit, labels, pooled.probes, settings.seed)
        top = headline_metrics(seq, main_fit, episodes, labels, settings)
        for k in range(1, settings.eval_folds):
            if not (folds == k).any():
                continue
            fold = fit_fold(seq, groups, folds == k, settings, source_index, progress=True,
                            desc=f"latent: cross-fit {k}/{settings.eval_folds - 1}", fold=k)
            pooled.add(seq, fold)
            run_probes(seq, fold, labels, pooled.probes, settings.seed)
            del fold
        per_source_compression = {
            source: compression(messages[messages["episode_id"].isin(ids)], tokens[tokens["episode_id"].isin(ids)],
                                settings.rank)
            for source, ids in episodes.groupby("source")["episode_id"]}
        per_source = by_source(seq, groups, pooled, settings, per_source_compression)
    print(f"latent: trained {1 + sum(1 for k in range(1, settings.eval_folds) if (folds == k).any())} models in "
          f"{time.perf_counter() - started:.1f} s (per fold: {', '.join(f'{s:.1f}' for s in pooled.seconds)}; "
          f"best epochs {pooled.best_epochs}; validation loss gains {pooled.validation_gains})", file=sys.stderr)

    for line in summary_lines(per_source):
        print(line, file=sys.stderr)

    rows = []
    for e, eid in enumerate(seq.episode_ids):
        for turn, last in seq.turn_ends[e]:
            rows.append({"episode_id": eid, "turn": turn, "split": splits[e],
                         "latent": main_fit.states[seq.offsets[e] + last].astype(np.float32)})
    table = check(pd.DataFrame(rows), latent_states(settings.rank), STATES)

    metrics = {**top, **compression(messages, tokens, settings.rank)}
    metrics["compression_ratio"] = metrics["compression_ratio_bytes"]
    metrics = {k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()}
    metrics["by_source"] = per_source
    metrics["evaluation"] = {
        "folds": settings.eval_folds, "bootstrap_resamples": settings.bootstrap, "seed": settings.seed,
        # Per fit (the published model first): the epochs its validation pass chose and its refit trained, and
        # how much lower the validation loss was there than for the initial cell (0: never improved on it).
        "best_epochs": pooled.best_epochs,
        "validation_loss_gains": pooled.validation_gains,
        "published_cell_improved_on_initialisation": bool(main_fit.validation is not None
                                                          and main_fit.fit.best_epoch > 0),
        "training": ("two passes per fit: a validation pass fits the ridge, the PCA initialisation and the cell "
                     "on the training groups minus validation groups and picks the number of epochs (0 = the "
                     "initial cell) by the loss on those validation groups; the fit's model is then retrained on "
                     "all its training groups (ridge and PCA refitted) for that many epochs. Nothing is chosen on "
                     "held-out groups."),
        "protocol": ("by_source: every group is held out once, by a model (ridge, PCA, latent, probes) fitted "
                     "without it; fold 0 is the published model's held-out split, which the top-level figures use. "
                     "Intervals: 95% percentile bootstrap over held-out groups; win = the interval excludes zero "
                     "on the better side."),
    }

    buffer = io.BytesIO()
    ridge = {source: {k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in parts.items()}
             for source, parts in main_fit.ridge.models.items()}
    torch.save({"state_dict": main_fit.model.state_dict(), "settings": settings.__dict__,
                "embedding_dim": seq.dim, "n_slots": main_fit.model.n_slots, "sources": list(source_index),
                "ridge": ridge, "ridge_alpha": main_fit.ridge.alpha,
                "memory_alpha": {list(source_index)[q]: a for q, a in main_fit.fit.alphas.items()}}, buffer)
    return LatentOutputs(
        states=table, model_pt=buffer.getvalue(), metrics=metrics, loss=loss_table(main_fit),
        rank_rows=rank_rows(per_source, settings.rank),
        deal_curve=pd.DataFrame(deal_curve(pooled.probes.rows.get("deal", [])), columns=DEAL_CURVE_COLUMNS))


def loss_table(fit: FoldFit) -> pd.DataFrame:
    """metrics/latent_loss.csv: per epoch, the validation pass's losses and the refit's train loss (empty past the
    chosen epochs; without a validation pass, only the refit's)."""
    rows: dict[int, dict[str, Any]] = {}
    for row in fit.validation.history if fit.validation is not None else []:
        rows[row["epoch"]] = dict(row)
    for row in fit.fit.history:
        rows.setdefault(row["epoch"], {"epoch": row["epoch"]})["refit_train_loss"] = row["train_loss"]
    return pd.DataFrame([rows[e] for e in sorted(rows)], columns=LOSS_COLUMNS)


def rank_rows(per_source: dict[str, Any], rank: int) -> pd.DataFrame:
    """metrics/latent_rank.csv: per source (held-out groups, each once), the model's explained variance vs the PCA
    of the same rank and its next-message error vs the memoryless ridge; read from ``by_source``, nothing new."""
    rows = []
    for source, res in sorted(per_source.items()):
        ev = res["reconstruction"]["explained_variance_vs_pca"]
        nm = res.get("next_message", {})
        vs_ridge = nm.get("vs_memoryless_ridge", {})
        rows.append({"source": source, "rank": rank, "explained_variance": ev["model"],
                     "pca_explained_variance": ev["baseline"],
                     "explained_variance_share_of_pca": res["reconstruction"]["share_of_pca_explained_variance"],
                     "next_message_error": vs_ridge.get("model"), "memoryless_ridge_error": vs_ridge.get("baseline"),
                     "next_message_gain_over_ridge": nm.get("relative_gain_over_ridge")})
    return pd.DataFrame(rows, columns=RANK_COLUMNS)


def summary_lines(per_source: dict[str, Any]) -> list[str]:
    """One line per source and comparison: model vs baseline, the 95% interval, and whether it is a win."""
    def fmt(name: str, c: dict[str, Any]) -> str:
        ci = "no interval" if c.get("ci95") is None else f"95% CI [{c['ci95'][0]:.3g}, {c['ci95'][1]:.3g}]"
        return f"  {name}: {c['model']} vs {c['baseline']} ({ci}){' WIN' if c.get('win') else ''}"
    lines = []
    for source, res in per_source.items():
        lines.append(f"latent: {source} ({res['groups']} held-out groups, each once)")
        lines.append(fmt("explained variance vs PCA", res["reconstruction"]["explained_variance_vs_pca"]))
        if "next_message" in res:
            lines.append(fmt("next-message error vs memoryless ridge", res["next_message"]["vs_memoryless_ridge"]))
        for probe, figures in res["probes"].items():
            for name, value in figures.items():
                if isinstance(value, dict) and "latent_vs_memoryless" in value:
                    lines.append(fmt(f"{probe} {name}, latent vs PCA codes", value["latent_vs_memoryless"]))
                    lines.append(fmt(f"{probe} {name}, latent vs prior", value["latent_vs_prior"]))
        if source == "who_when" and "who_when_paper_best_llm" in res["probes"]:
            paper = res["probes"]["who_when_paper_best_llm"]
            lines.append(f"  Who&When paper, best LLM method: agent {paper['agent_accuracy']}, step "
                         f"{paper['step_accuracy']} (protocols differ: zero-shot judging vs our supervised probe "
                         "on held-out tasks)")
    return lines


def headline_metrics(seq: Sequences, fit: FoldFit, episodes: pd.DataFrame, labels: EpisodeLabels,
                     settings: LatentSettings) -> dict[str, Any]:
    """The top-level figures, as before: the published model on its held-out split, all sources together."""
    x = seq.embeddings
    train_rows, held_rows = seq.rows_of(fit.train_eps), seq.rows_of(fit.held_eps)
    train_x, held_x = x[train_rows], x[held_rows]
    current, nxt = seq.pairs_of(fit.held_eps)
    train_current, train_next = seq.pairs_of(fit.train_eps)
    final = fit.states[seq.offsets[1:] - 1]
    questions = episodes["group_id"].to_numpy()
    held = fit.held_eps
    # The probe is scored on held-out groups; over all episodes too (5x the data, still grouped, but there the
    # latent model has seen the texts of the training groups).
    probe_all = winner_probe(final, labels.winner, questions, settings.probe_folds, settings.seed)
    return {
        "rank": settings.rank,
        "cell": settings.cell,
        "heldout_episodes": int(len(held)),
        "heldout_messages": int(len(held_rows)),
        "reconstruction_error": mse(held_x, fit.recon[held_rows]),
        "explained_variance": explained_variance(held_x, fit.recon[held_rows], train_x.mean(axis=0)),
        **pca_baseline(train_x, held_x, settings.rank, settings.seed),
        "next_step_error": mse(x[nxt], fit.next_pred[current]),
        "next_step_error_no_memory": mse(x[nxt], x[current]),
        "next_step_error_no_memory_same_rank": no_memory_same_rank(x[train_current], x[train_next], x[current],
                                                                   x[nxt], settings.rank, settings.seed),
        "next_step_error_memoryless_ridge": mse(x[nxt], fit.ridge_next[current]),
        **winner_probe(final[held], labels.winner[held], questions[held], settings.probe_folds, settings.seed),
        "probe_accuracy_all_episodes": probe_all["probe_accuracy"],
        "probe_majority_rate_all_episodes": probe_all["probe_majority_rate"],
        "best_epoch": fit.fit.best_epoch,
    }
