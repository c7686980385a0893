"""latent: shapes, determinism, a leak-free split, the PCA and ridge baselines, and recovery of planted memory."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from coordset.errors import CoordsetError, ParamError
from coordset.latent import (
    LatentSettings,
    Sequences,
    assign_folds,
    build_sequences,
    check_rank,
    latent_settings,
    split_groups,
    validation_groups,
)
from coordset.latent.evaluation import fit_fold
from coordset.latent.metrics import mse, no_memory_same_rank, pca_baseline
from coordset.latent.model import deterministic_torch
from coordset.normalize import episode_frames
from coordset.sources.parallel import Conversation, parallel_episode
from stages import latent as latent_stage
from tests.helpers import repo_params


@pytest.mark.parametrize(("rank", "message"), [
    (0, "must be >= 1"), (-3, "must be >= 1"), ("eight", "must be an integer"), (8.5, "must be an integer"),
    (True, "must be an integer"), (385, "must not exceed the embedding size 384"),
])
def test_bad_rank_is_refused_naming_the_key(rank: object, message: str) -> None:
    with pytest.raises(ParamError, match=rf"'rank' {message}"):
        latent_settings(repo_params(rank=rank))


@pytest.mark.parametrize(("key", "value"), [
    ("latent.cell", "lstm"), ("latent.cell", "lowrank_rnn"), ("latent.epochs", 0), ("latent.seed", -1),
    ("latent.learning_rate", "fast"), ("latent.batch_size", 0), ("latent.holdout_fraction", 1.5),
    ("latent.probe_folds", 1), ("latent.weight_decay", -0.1), ("latent.eval_folds", 0), ("latent.bootstrap", 10),
    ("latent.patience", 0), ("latent.validation_fraction", 0.9), ("latent.memory_init", 1.0),
    ("latent.reconstruction_weight", -1), ("latent.memory_init", "some"),
])
def test_bad_latent_params_are_refused_naming_the_key(key: str, value: object) -> None:
    with pytest.raises(ParamError, match=rf"'{key}'"):
        latent_settings(repo_params(**{key: value}))


def test_rank_is_checked_against_the_actual_embedding_size() -> None:
    with pytest.raises(ParamError, match="embedding size 16"):
        check_rank(latent_settings(repo_params(rank=17)), 16)
    check_rank(latent_settings(repo_params(rank=16)), 16)


def test_split_keeps_every_group_on_one_side() -> None:
    questions = pd.Series([str(q) for q in range(81, 161) for _ in range(15)])
    split = split_groups(questions, 0.2, seed=0)
    assert set(split.values()) == {"train", "heldout"}
    assert sum(v == "heldout" for v in split.values()) == 16
    assigned = questions.map(split)
    assert (assigned.groupby(questions).nunique() == 1).all()
    assert split == split_groups(questions.sample(frac=1, random_state=3), 0.2, seed=0)  # order-free
    assert split != split_groups(questions, 0.2, seed=1)


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
    explained = 1 - np.sum((held - recon) ** 2) / total
    assert result["pca_explained_variance"] == pytest.approx(explained, rel=1e-9)


def test_same_rank_memoryless_baseline_is_exact_for_a_linear_map_of_low_rank_messages() -> None:
    rng = np.random.default_rng(1)
    basis = rng.normal(size=(3, 12))
    current = rng.normal(size=(400, 3)) @ basis
    mix = rng.normal(size=(12, 12))
    nxt = current @ mix + 0.5
    error = no_memory_same_rank(current[:300], nxt[:300], current[300:], nxt[300:], rank=3, seed=0)
    assert error == pytest.approx(0, abs=1e-20)
    # One component short of the current messages' rank, the map can no longer be exact.
    assert no_memory_same_rank(current[:300], nxt[:300], current[300:], nxt[300:], rank=2, seed=0) > 1e-3


def test_split_per_source_holds_out_groups_of_every_source_and_folds_cover_each_group_once() -> None:
    groups = pd.Series([f"mt{q}" for q in range(20) for _ in range(3)] + ["game_a", "game_b", "game_c"] * 4
                       + [f"task{t}" for t in range(9)])
    sources = pd.Series(["mt"] * 60 + ["deal"] * 12 + ["who"] * 9)
    split = split_groups(groups, 0.2, seed=0, sources=sources)
    for source in ("mt", "deal", "who"):  # a global draw can leave a small source with no held-out group
        sides = {split[g] for g in set(groups[sources == source])}
        assert sides == {"train", "heldout"}, source
    assert sum(split[g] == "heldout" for g in {"game_a", "game_b", "game_c"}) == 1
    folds = assign_folds(groups, sources, 0.2, seed=0, folds=5)
    assert set(folds) == set(groups)  # every group in exactly one fold (a dict: one value per group)
    assert {g for g, k in folds.items() if k == 0} == {g for g, side in split.items() if side == "heldout"}
    assert {folds[g] for g in ("game_a", "game_b", "game_c")} == {0, 1, 2}  # each game held out once
    assert folds == assign_folds(groups.sample(frac=1, random_state=2), sources.sample(frac=1, random_state=2),
                                 0.2, seed=0, folds=5)
    assert set(assign_folds(groups, sources, 0.2, seed=0, folds=1).values()) == {0, -1}


def test_a_group_in_two_sources_is_refused() -> None:
    with pytest.raises(CoordsetError, match="appears in two sources"):
        split_groups(pd.Series(["g1", "g1", "g2"]), 0.5, 0, sources=pd.Series(["a", "b", "a"]))


def _settings(**overrides: object) -> LatentSettings:
    base = dict(rank=4, cell="linear", seed=0, epochs=4, learning_rate=0.001, weight_decay=0.0, batch_size=32,
                holdout_fraction=0.2, probe_folds=2, patience=2, validation_fraction=0.2, eval_folds=2,
                bootstrap=200, memory_init=0.1)
    return LatentSettings(**{**base, **overrides})  # type: ignore[arg-type]


def _memory_sequences(n_episodes: int = 160, steps: int = 8, dim: int = 16, seed: int = 0, lag: int = 2,
                      strength: float = 1.0) -> tuple[Sequences, np.ndarray]:
    """Messages whose next one repeats, in its own low-variance direction, a code the message ``lag`` steps
    back carried: unknowable from the current message alone, known to a state that remembers."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(dim, dim)))[0]
    emb = np.zeros((n_episodes, steps, dim), np.float32)
    for e in range(n_episodes):
        codes = rng.normal(size=(steps, dim)) * np.linspace(1.0, 0.3, dim)
        for t in range(lag, steps):
            codes[t, -1] = strength * codes[t - lag, 0] + 0.1 * rng.normal()
        emb[e] = codes @ basis.T
    slots = np.tile(np.arange(steps) % 2 + 2, (n_episodes, 1))
    seq = Sequences.from_padded([f"e{i:03d}" for i in range(n_episodes)], emb, slots,
                                np.ones((n_episodes, steps), bool), [[(t + 1, t) for t in range(steps)]] * n_episodes,
                                sources=["s"] * n_episodes)
    groups = np.array([f"g{i // 2}" for i in range(n_episodes)], dtype=object)  # two episodes per group
    return seq, groups


def _next_errors(seq: Sequences, fit: object) -> tuple[float, float]:
    current, nxt = seq.pairs_of(fit.held_eps)  # type: ignore[attr-defined]
    x = seq.embeddings
    return mse(x[nxt], fit.next_pred[current]), mse(x[nxt], fit.ridge_next[current])  # type: ignore[attr-defined]


def test_planted_memory_is_found_and_the_memoryless_baseline_is_the_special_case() -> None:
    seq, groups = _memory_sequences()
    held = np.arange(len(groups)) >= 128
    fit = fit_fold(seq, groups, held, _settings(), {"s": 0}, progress=False, desc="test")
    model_error, ridge_error = _next_errors(seq, fit)
    assert model_error < 0.97 * ridge_error  # the lag-2 code is only in the state
    rows = seq.rows_of(fit.held_eps)
    x = seq.embeddings[rows]
    mean = seq.embeddings[seq.rows_of(fit.train_eps)].mean(axis=0)

    def explained(recon: np.ndarray) -> float:
        return 1 - float(((x - recon[rows]) ** 2).sum() / ((x - mean) ** 2).sum())
    assert explained(fit.recon) > 0.95 * explained(fit.pca_recon)  # a trace of memory, PCA-like reconstruction
    # Without any memory in the data the model adds nothing the memoryless ridge does not have.
    plain, groups = _memory_sequences(strength=0.0)
    fit = fit_fold(plain, groups, held, _settings(), {"s": 0}, progress=False, desc="test")
    model_error, ridge_error = _next_errors(plain, fit)
    assert model_error == pytest.approx(ridge_error, rel=0.01)


def test_without_memory_the_model_is_exactly_the_ridge() -> None:
    seq, groups = _memory_sequences(n_episodes=40)
    held = np.arange(40) >= 32
    fit = fit_fold(seq, groups, held, _settings(cell="linear", epochs=1, learning_rate=1e-6, memory_init=0.01),
                   {"s": 0}, progress=False, desc="test")
    with torch.no_grad():
        fit.model.cell.transition.weight.zero_()  # A = 0: the state is the current message's code
    from coordset.latent.model import predict, refit_readouts
    with deterministic_torch(0):
        refit_readouts(fit.model, fit.data, fit.train_eps, groups)
    _, _, nxt = predict(fit.model, fit.data)
    np.testing.assert_allclose(nxt, fit.ridge_next, atol=1e-5)


def test_epochs_are_chosen_on_validation_groups_the_ridge_and_pca_never_saw_then_refit_on_all() -> None:
    seq, groups = _memory_sequences(n_episodes=80)
    held = np.arange(80) >= 64
    settings = _settings(epochs=4, patience=4, learning_rate=1e-4)
    fit = fit_fold(seq, groups, held, settings, {"s": 0}, progress=False, desc="test")
    assert fit.validation is not None
    val = validation_groups(groups[fit.train_eps], seq.sources[fit.train_eps], 0.2, settings.seed)
    fit_eps = np.array([e for e in fit.train_eps if groups[e] not in val])
    assert 0 < len(fit_eps) < len(fit.train_eps)

    def mean_of(eps: np.ndarray) -> np.ndarray:
        return seq.embeddings[seq.rows_of(eps)].astype(np.float64).mean(axis=0)
    # The validation pass starts (PCA, standardization) from the training groups minus the validation groups ...
    np.testing.assert_allclose(fit.validation.model.center.numpy(), mean_of(fit_eps), atol=1e-6)
    assert not np.allclose(mean_of(fit_eps), mean_of(fit.train_eps), atol=1e-4)
    assert [r["epoch"] for r in fit.validation.history][0] == 0  # the initial cell is a candidate
    # ... and the fold's model is retrained on all of them for exactly the epochs that pass chose.
    np.testing.assert_allclose(fit.model.center.numpy(), mean_of(fit.train_eps), atol=1e-6)
    assert fit.fit.best_epoch == fit.validation.best_epoch
    assert [r["epoch"] for r in fit.fit.history] == list(range(1, fit.validation.best_epoch + 1))


@pytest.mark.parametrize("steps", [2, 3])
def test_episodes_that_all_repeat_one_conversation_train_without_nan(steps: int) -> None:
    # The ridge predicts every training pair exactly, so its error (the next-step loss's unit) is 0: dividing by
    # it made the loss NaN and the read-outs' least squares fail ("SVD did not converge").
    rng = np.random.default_rng(0)
    n = 20
    emb = np.tile(rng.normal(size=(steps, 8)).astype(np.float32), (n, 1, 1))
    seq = Sequences.from_padded([f"e{i:02d}" for i in range(n)], emb, np.tile(np.arange(steps) % 2 + 2, (n, 1)),
                                np.ones((n, steps), bool), [[(t + 1, t) for t in range(steps)]] * n,
                                sources=["s"] * n)
    groups = np.array([f"g{i // 2}" for i in range(n)], dtype=object)
    fit = fit_fold(seq, groups, np.arange(n) >= 16, _settings(rank=2, cell="gru", epochs=2), {"s": 0},
                   progress=False, desc="test")
    assert np.isfinite(fit.states).all() and np.isfinite(fit.next_pred).all()
    assert all(np.isfinite(r["validation_loss"]) for r in fit.validation.history)


@pytest.mark.parametrize("cell", ["gru", "linear"])
def test_training_is_deterministic_to_the_byte(cell: str) -> None:
    seq, groups = _memory_sequences(n_episodes=40)
    held = np.arange(40) >= 32

    def trained_bytes(seed: int = 0) -> bytes:
        # No validation split: the last epoch is kept, so the seed (batch order, GRU init) shows in the bytes.
        fit = fit_fold(seq, groups, held, _settings(epochs=3, cell=cell, seed=seed, validation_fraction=0.0),
                       {"s": 0}, progress=False, desc="test")
        buffer = io.BytesIO()
        torch.save(fit.model.state_dict(), buffer)
        return buffer.getvalue() + fit.states.tobytes() + fit.next_pred.tobytes()

    first = trained_bytes()
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)  # the caller's thread count must not matter: training uses one
    try:
        assert trained_bytes() == first
    finally:
        torch.set_num_threads(threads)
    assert trained_bytes(seed=1) != first


def test_deterministic_mode_is_undone_on_exit() -> None:
    threads, flag = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    with deterministic_torch(0):
        assert torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled()
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == (threads, flag)


# --- the stage itself, on a small synthetic project in the contract's shape ---------------------------------

DIM = 16


def _write_project(root: Path, rank: int = 4, cell: str = "gru") -> None:
    """10 questions x 6 model pairs x 2 turns, every table in its schema's shape: normalized episodes, messages
    and outcomes, enriched message tokens, embeddings, params.yaml."""
    rng = np.random.default_rng(7)
    models = ["alpha", "beta", "gamma", "delta"]
    convs = []
    for q in range(10):
        for pair in itertools.combinations(sorted(models), 2):
            replies = {m: [f"q{q} turn {t} answer by {m}" for t in (1, 2)] for m in pair}
            convs.append(parallel_episode(Conversation(
                episode_id=f"local/q{q}/{pair[0]}__{pair[1]}", source="local", question_id=f"q{q}", category=None,
                language="en", user_turns=[f"q{q} turn {t} user asks" for t in (1, 2)], replies=replies,
                winner=str(rng.choice([*pair, "tie"])), winner_source="human_vote"), "test"))
    episodes, messages = episode_frames(convs)
    outcomes = pd.DataFrame({"episode_id": [e.episode_id for e in convs], "source": "local",
                             "outcome": [e.outcome.label for e in convs], "outcome_source": "human_vote",
                             "unknown_reason": None, "mistake_agent": None, "mistake_step": None,
                             "mistake_reason": None, "any_deal_passed": None}).astype(
        {"mistake_step": "Int64", "any_deal_passed": "boolean", "unknown_reason": "str", "mistake_agent": "str",
         "mistake_reason": "str"})
    hashes = sorted(set(messages["text_sha256"]))
    vectors = rng.normal(size=(len(hashes), DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for folder in ("normalized", "enriched", "embeddings"):
        (root / "data" / folder).mkdir(parents=True)
    episodes.to_parquet(root / "data/normalized/episodes.parquet")
    messages.to_parquet(root / "data/normalized/messages.parquet")
    outcomes.to_parquet(root / "data/normalized/outcomes.parquet")
    messages[["episode_id", "turn", "position", "speaker", "role", "agent_model", "text_sha256"]].assign(
        n_tokens=messages["text"].str.split().str.len().astype("int64"),
        reasoning_tokens=pd.array([None] * len(messages), dtype="Int64"),
    ).to_parquet(root / "data/enriched/messages.parquet")
    pd.DataFrame({"text_sha256": hashes, "embedding": list(vectors), "n_wordpieces": 8, "n_chunks": 1,
                  "truncated": False, "long_text_method": "truncate"}).to_parquet(
        root / "data/embeddings/embeddings.parquet")
    # native: this process loaded numpy and torch before the stage could pin them (tests/test_numerics.py)
    params = repo_params(rank=rank, **{"numerics": "native", "latent.cell": cell, "latent.epochs": 3,
                                       "latent.probe_folds": 3, "latent.batch_size": 16, "latent.bootstrap": 200})
    (root / "params.yaml").write_text(yaml.safe_dump(params))


OUTPUTS = ["data/latent/latent_states.parquet", "models/latent_model.pt", "metrics/latent.json",
           "metrics/latent_loss.csv", "metrics/latent_rank.csv", "metrics/latent_deal_curve.csv"]


def _run_stage(root: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(root)
    latent_stage.main()
    return {name: hashlib.sha256((root / name).read_bytes()).hexdigest() for name in OUTPUTS}


@pytest.mark.parametrize("cell", ["gru", "linear"])
def test_stage_outputs_shapes_split_and_identical_bytes_on_rerun(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cell: str) -> None:
    _write_project(tmp_path, rank=4, cell=cell)
    first = _run_stage(tmp_path, monkeypatch)
    assert _run_stage(tmp_path, monkeypatch) == first

    states = pd.read_parquet(tmp_path / OUTPUTS[0])
    assert len(states) == 60 * 2 and states["latent"].map(len).eq(4).all()
    assert list(states.columns) == ["episode_id", "turn", "split", "latent"]
    assert states.equals(states.sort_values(["episode_id", "turn"]).reset_index(drop=True))
    questions = states["episode_id"].str.split("/").str[1]
    assert (states.groupby(questions)["split"].nunique() == 1).all()  # no question on both sides
    assert set(states["split"]) == {"train", "heldout"}

    metrics = json.loads((tmp_path / "metrics/latent.json").read_text())
    assert metrics["rank"] == 4 and metrics["cell"] == cell
    assert metrics["heldout_episodes"] == 2 * 6  # round(10 questions * 0.2) held out, 6 pairs each
    assert metrics["latent_bytes_per_turn"] == 16
    for key in ("reconstruction_error", "pca_reconstruction_error", "next_step_error",
                "next_step_error_no_memory", "next_step_error_no_memory_same_rank", "explained_variance",
                "pca_explained_variance", "text_bytes_per_turn", "tokens_per_turn", "compression_ratio_bytes",
                "compression_ratio_tokens"):
        assert np.isfinite(metrics[key]), key
    assert 0 <= metrics["probe_accuracy_all_episodes"] <= 1
    loss = pd.read_csv(tmp_path / "metrics/latent_loss.csv")
    assert list(loss.columns) == ["epoch", "train_loss", "validation_loss", "validation_reconstruction",
                                  "validation_next", "refit_train_loss"]
    assert loss["epoch"].tolist() == [0, 1, 2, 3]  # epoch 0: the initial cell, a candidate for early stopping
    best = metrics["best_epoch"]
    assert best in loss["epoch"].tolist()
    # The refit on all training groups trains exactly the epochs its validation pass chose.
    assert loss["refit_train_loss"].notna().tolist() == [0 < e <= best for e in loss["epoch"]]
    evaluation = metrics["evaluation"]
    assert evaluation["best_epochs"][0] == best and len(evaluation["validation_loss_gains"]) == 5
    assert evaluation["published_cell_improved_on_initialisation"] == (best > 0)
    local = metrics["by_source"]["local"]
    assert local["groups"] == 10  # cross-fitted: every question held out once
    assert local["episodes"] == 60
    for comparison in (local["reconstruction"]["explained_variance_vs_pca"],
                       local["next_message"]["vs_memoryless_ridge"]):
        assert set(comparison) >= {"model", "baseline", "difference", "ci95", "win"}
        lo, hi = comparison["ci95"]
        assert lo <= hi and comparison["win"] == (lo > 0 if comparison["better"] == "higher" else hi < 0)
    assert set(local["next_message"]["by_position"]) == {"agent_after_agent", "agent_after_user",
                                                         "user_after_agent"}
    rank_rows = pd.read_csv(tmp_path / "metrics/latent_rank.csv")  # one row per source, read from by_source
    ev = local["reconstruction"]["explained_variance_vs_pca"]
    assert rank_rows.to_dict("records") == [{
        "source": "local", "rank": 4, "explained_variance": ev["model"], "pca_explained_variance": ev["baseline"],
        "explained_variance_share_of_pca": local["reconstruction"]["share_of_pca_explained_variance"],
        "next_message_error": local["next_message"]["vs_memoryless_ridge"]["model"],
        "memoryless_ridge_error": local["next_message"]["vs_memoryless_ridge"]["baseline"],
        "next_message_gain_over_ridge": local["next_message"]["relative_gain_over_ridge"]}]
    saved = torch.load(tmp_path / "models/latent_model.pt", weights_only=True)
    assert saved["settings"]["rank"] == 4 and saved["embedding_dim"] == DIM
    assert set(saved["ridge"]) == {"local"}


def test_stage_refuses_a_rank_above_the_embedding_size_before_training(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_project(tmp_path, rank=DIM + 1)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ParamError, match=f"'rank' must not exceed the embedding size {DIM}"):
        latent_stage.main()
    assert not (tmp_path / "models").exists()


def test_a_message_without_an_embedding_is_a_clear_error(tmp_path: Path) -> None:
    _write_project(tmp_path)
    episodes = pd.read_parquet(tmp_path / "data/normalized/episodes.parquet")
    messages = pd.read_parquet(tmp_path / "data/normalized/messages.parquet")
    embeddings = pd.read_parquet(tmp_path / "data/embeddings/embeddings.parquet").iloc[1:]
    with pytest.raises(CoordsetError, match="no row for text_sha256 .* re-run the embed stage"):
        build_sequences(episodes, messages, embeddings)
