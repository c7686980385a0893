"""latent: shapes, determinism, a leak-free split, the PCA baseline, and recovery of known dynamics."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch

from coordset.errors import ParamError
from coordset.latent import MAX_AGENTS, LatentSettings, Sequences, latent_settings, split_questions
from coordset.latent_metrics import mse, next_step_pairs, pca_baseline
from coordset.latent_model import predict, train
from tests.helpers import repo_params


@pytest.mark.parametrize(("rank", "message"), [
    (0, "must be >= 1"), (-3, "must be >= 1"), ("eight", "must be an integer"), (8.5, "must be an integer"),
    (True, "must be an integer"), (385, "must not exceed the embedding size 384"),
])
def test_bad_rank_is_refused_naming_the_key(rank: object, message: str) -> None:
    with pytest.raises(ParamError, match=rf"'rank' {message}"):
        latent_settings(repo_params(rank=rank))


def test_rank_is_checked_against_the_actual_embedding_size() -> None:
    with pytest.raises(ParamError, match="embedding size 16"):
        latent_settings(repo_params(rank=17), embedding_dim=16)
    assert latent_settings(repo_params(rank=16), embedding_dim=16).rank == 16


def test_split_keeps_every_question_on_one_side() -> None:
    questions = pd.Series([str(q) for q in range(81, 161) for _ in range(15)])
    split = split_questions(questions, 0.2, seed=0)
    assert set(split.values()) == {"train", "heldout"}
    assert sum(v == "heldout" for v in split.values()) == 16
    assigned = questions.map(split)
    assert (assigned.groupby(questions).nunique() == 1).all()
    assert split == split_questions(questions.sample(frac=1, random_state=3), 0.2, seed=0)  # order-free
    assert split != split_questions(questions, 0.2, seed=1)


def test_pca_baseline_matches_an_svd_projection() -> None:
    rng = np.random.default_rng(0)
    train_x = rng.normal(size=(300, 20)) @ rng.normal(size=(20, 20))
    held = rng.normal(size=(50, 20)) @ rng.normal(size=(20, 20))
    result = pca_baseline(train_x, held, rank=5, seed=0)
    mean = train_x.mean(axis=0)
    _, _, vt = np.linalg.svd(train_x - mean, full_matrices=False)
    basis = vt[:5].T
    recon = mean + (held - mean) @ basis @ basis.T
    assert result["pca_reconstruction_error"] == pytest.approx(mse(held, recon), rel=1e-9)
    total = np.sum((held - mean) ** 2)
    assert result["pca_explained_variance"] == pytest.approx(1 - np.sum((held - recon) ** 2) / total, rel=1e-9)


def _settings(**overrides: object) -> LatentSettings:
    base = dict(rank=4, cell="gru", seed=0, epochs=120, learning_rate=0.01, weight_decay=0.0, batch_size=32,
                holdout_fraction=0.2, probe_folds=2)
    return LatentSettings(**{**base, **overrides})  # type: ignore[arg-type]


def _rotating_sequences(n_episodes: int = 120, steps: int = 8, dim: int = 24, seed: int = 0) -> Sequences:
    """Messages on a 2-d rotation embedded in `dim` dimensions: the next one is knowable, and far from the current."""
    rng = np.random.default_rng(seed)
    lift = np.linalg.qr(rng.normal(size=(dim, 2)))[0].T  # (2, dim) orthonormal rows
    angle = 2 * np.pi / 5
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    emb = np.zeros((n_episodes, steps, dim), np.float32)
    for e in range(n_episodes):
        z = rng.normal(size=2)
        z /= np.linalg.norm(z)
        for t in range(steps):
            emb[e, t] = z @ lift + 0.01 * rng.normal(size=dim)
            z = rotation @ z
    roles = np.zeros((n_episodes, steps, 1 + MAX_AGENTS), np.float32)
    roles[:, :, 0] = 1
    return Sequences([f"e{i:03d}" for i in range(n_episodes)], emb, roles, np.ones((n_episodes, steps), bool),
                     [[(t + 1, t) for t in range(steps)] for _ in range(n_episodes)])


def test_known_low_rank_dynamics_are_recovered() -> None:
    seq = _rotating_sequences()
    train_rows, held_rows = np.arange(0, 96), np.arange(96, 120)
    fit = train(seq, train_rows, held_rows, _settings(), progress=False)
    states, recon, nxt = predict(fit.model, seq)
    assert states.shape == (120, 8, 4)
    actual, predicted, current = next_step_pairs(seq.embeddings[held_rows], nxt[held_rows], seq.mask[held_rows])
    model_error, no_memory_error = mse(actual, predicted), mse(actual, current)
    assert model_error < 0.25 * no_memory_error
    assert fit.history[-1]["heldout_loss"] < fit.history[0]["heldout_loss"]


def test_training_is_deterministic_to_the_byte() -> None:
    seq = _rotating_sequences(n_episodes=40)
    rows = np.arange(40)

    def trained_bytes() -> bytes:
        fit = train(seq, rows[:32], rows[32:], _settings(epochs=5), progress=False)
        buffer = io.BytesIO()
        torch.save(fit.model.state_dict(), buffer)
        return buffer.getvalue() + predict(fit.model, seq)[0].tobytes()

    assert trained_bytes() == trained_bytes()
