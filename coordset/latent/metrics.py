"""Held-out quality of the latent states against the obvious baselines (PCA, no memory, majority)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import GroupKFold


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a - b) ** 2))


def explained_variance(actual: np.ndarray, predicted: np.ndarray, train_mean: np.ndarray) -> float:
    """1 - residual sum of squares / total sum of squares around the training mean."""
    return float(1 - np.sum((actual - predicted) ** 2) / np.sum((actual - train_mean) ** 2))


def pca_baseline(train: np.ndarray, heldout: np.ndarray, rank: int, seed: int) -> dict[str, float]:
    """PCA of the same rank fitted on train messages, scored on held-out messages."""
    pca = PCA(n_components=rank, svd_solver="full", random_state=seed).fit(train)
    recon = pca.inverse_transform(pca.transform(heldout))
    return {"pca_reconstruction_error": mse(heldout, recon),
            "pca_explained_variance": explained_variance(heldout, recon, train.mean(axis=0))}


def no_memory_same_rank(train_current: np.ndarray, train_next: np.ndarray, held_current: np.ndarray,
                        held_next: np.ndarray, rank: int, seed: int) -> float:
    """Next-step MSE of a memoryless predictor squeezed through the same rank as the model.

    The current message's PCA code (``rank`` components, fitted on train messages) is mapped linearly
    to the next message (least squares on train pairs). The plain no-memory baseline copies all D
    dimensions of the current message, which a rank-``rank`` state cannot; this one separates "memory
    helps" from "a bigger bottleneck helps".
    """
    pca = PCA(n_components=rank, svd_solver="full", random_state=seed).fit(train_current)
    regression = LinearRegression().fit(pca.transform(train_current), train_next)
    return mse(held_next, regression.predict(pca.transform(held_current)))


def next_step_pairs(embeddings: np.ndarray, predictions: np.ndarray, mask: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(actual next, model's prediction, current message) for every consecutive pair of real steps."""
    pair = mask[:, 1:] & mask[:, :-1]
    return embeddings[:, 1:][pair], predictions[:, :-1][pair], embeddings[:, :-1][pair]


def winner_probe(final_latents: np.ndarray, labels: np.ndarray, groups: np.ndarray, folds: int, seed: int
                 ) -> dict[str, Any]:
    """Grouped-CV logistic regression from the final latent to the outcome, vs the majority class.

    Folds split by question (``groups``), so the probe is always scored on questions it was not fitted on.
    A fold whose training episodes all have one outcome cannot fit a logistic regression: its probe predicts
    that outcome (as the majority does), and ``probe_one_class_folds`` counts such folds.
    """
    known = labels != "unknown"
    x, y, g = final_latents[known], labels[known], groups[known]
    n_folds = min(folds, len(np.unique(g)))
    if len(np.unique(y)) < 2 or n_folds < 2:
        return {"probe_accuracy": None, "probe_majority_rate": None, "probe_episodes": int(len(y)),
                "probe_folds": n_folds, "probe_one_class_folds": 0}
    correct = majority = one_class = 0
    for train_idx, test_idx in GroupKFold(n_splits=n_folds).split(x, y, g):
        values, counts = np.unique(y[train_idx], return_counts=True)
        if len(values) < 2:
            one_class += 1
            predicted = np.full(len(test_idx), values[0], dtype=object)
        else:
            predicted = LogisticRegression(max_iter=2000, random_state=seed).fit(x[train_idx], y[train_idx]).predict(
                x[test_idx])
        correct += int((predicted == y[test_idx]).sum())
        majority += int((y[test_idx] == values[np.argmax(counts)]).sum())
    return {"probe_accuracy": correct / len(y), "probe_majority_rate": majority / len(y),
            "probe_episodes": int(len(y)), "probe_folds": n_folds, "probe_one_class_folds": one_class}


def outcome_categories(episodes: pd.DataFrame, outcomes: pd.DataFrame) -> np.ndarray:
    """Each episode's outcome as a label that does not name agents: a winning agent becomes agent_1 /
    agent_2 / … by its slot (head-to-head sources), any other outcome is kept as the source labels it
    (pass / fail / failure / correct / …, tie, unknown)."""
    label_of = outcomes.set_index("episode_id")["outcome"]

    def category(eid: str, agents: Any) -> str:
        label = label_of[eid]
        agents = list(agents)
        return f"agent_{agents.index(label) + 1}" if label in agents else label

    return np.array([category(e, a) for e, a in zip(episodes["episode_id"], episodes["agents"], strict=True)],
                    dtype=object)


def compression(messages: pd.DataFrame, message_tokens: pd.DataFrame, rank: int) -> dict[str, float]:
    """Bytes of UTF-8 text and tokens exchanged per turn vs bytes of the float32 latent per turn.

    ``messages`` needs ``episode_id``, ``turn`` and ``n_bytes`` (each text's UTF-8 size).
    """
    per_turn_bytes = messages.groupby(["episode_id", "turn"])["n_bytes"].sum().mean()
    per_turn_tokens = message_tokens.groupby(["episode_id", "turn"])["n_tokens"].sum().mean()
    latent_bytes = 4 * rank
    return {"text_bytes_per_turn": float(per_turn_bytes), "tokens_per_turn": float(per_turn_tokens),
            "latent_bytes_per_turn": latent_bytes,
            "compression_ratio_bytes": float(per_turn_bytes / latent_bytes),
            "compression_ratio_tokens": float(per_turn_tokens / latent_bytes)}
