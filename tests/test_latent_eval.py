"""latent evaluation: the seeded group bootstrap, and every probe finding a planted signal but not shuffled labels."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from coordset.latent import Sequences
from coordset.latent.evaluation import (
    EpisodeLabels,
    ProbeRecords,
    _ratio,
    compare,
    group_sums,
    probe_deal,
    probe_mistake_agent,
    probe_mistake_step,
    probe_winner,
    resample_weights,
)
from coordset.latent.metrics import winner_probe
from coordset.latent.probes import classify, conditional_logit

# --- the bootstrap ------------------------------------------------------------------------------------------


def test_resampling_is_seeded_and_draws_whole_groups_with_replacement() -> None:
    first = resample_weights(30, 500, seed=3)
    assert np.array_equal(first, resample_weights(30, 500, seed=3))
    assert not np.array_equal(first, resample_weights(30, 500, seed=4))
    assert first.shape == (500, 30) and (first.sum(axis=1) == 30).all()  # each resample: 30 groups drawn
    assert (first == 0).any() and (first >= 2).any()  # some groups left out, some drawn twice


def _errors(n_groups: int, shift: float, seed: int = 0) -> np.ndarray:
    """Per group: model SSE, baseline SSE, count (errors per item ~ 1, the model's lower by ``shift``)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n_groups):
        n = int(rng.integers(5, 15))
        base = rng.gamma(2.0, 0.5, size=n)
        rows.append([float((base - shift + 0.05 * rng.normal(size=n)).sum()), float(base.sum()), n])
    return np.array(rows)


def test_a_consistent_gain_wins_and_noise_does_not() -> None:
    value = _ratio(0, 2, 1)
    gain = compare(_errors(40, 0.1), value, False, 2000, seed=0)
    assert gain["difference"] < 0 and gain["ci95"][1] < 0 and gain["win"] is True
    assert gain == compare(_errors(40, 0.1), value, False, 2000, seed=0)  # reproducible to the digit
    noise = compare(_errors(40, 0.0), value, False, 2000, seed=0)
    assert noise["ci95"][0] < 0 < noise["ci95"][1] and noise["win"] is False
    # Higher-is-better comparisons win on the other side.
    assert compare(_errors(40, -0.1), value, True, 2000, seed=0)["win"] is True


def test_one_group_gives_no_interval_and_no_win_and_few_groups_say_so() -> None:
    one = compare(_errors(1, 0.3), _ratio(0, 2, 1), False, 500, seed=0)
    assert one["ci95"] is None and one["win"] is False and "one held-out group" in one["note"]
    few = compare(_errors(3, 0.3), _ratio(0, 2, 1), False, 500, seed=0)
    assert few["groups"] == 3 and "coarse" in few["note"]


def test_group_sums_add_rows_per_group_in_the_given_order() -> None:
    sums = group_sums(np.array(["b", "a", "b"]), [np.array([1.0, 2.0, 3.0]), np.ones(3)], np.array(["a", "b"]))
    assert sums.tolist() == [[2.0, 1.0], [4.0, 2.0]]


# --- probes: planted signal vs shuffled labels ---------------------------------------------------------------


def _world(n_episodes: int = 240, steps: int = 10, rank: int = 4, source: str = "who_when", seed: int = 0
           ) -> tuple[Sequences, SimpleNamespace, np.random.Generator]:
    """Episodes of ``steps`` messages by three agents, states and PCA codes pure noise (to be planted into);
    the first 180 episodes train the probes, the rest are held out."""
    rng = np.random.default_rng(seed)
    n = n_episodes * steps
    agents = np.array(["alpha", "beta", "gamma"], dtype=object)
    speakers = agents[rng.integers(0, 3, size=n)]
    seq = Sequences([f"e{i:03d}" for i in range(n_episodes)], rng.normal(size=(n, 8)).astype(np.float32),
                    np.full(n, 2), np.arange(0, n + 1, steps), [[(t + 1, t) for t in range(steps)]] * n_episodes,
                    np.array([source] * n_episodes, dtype=object), np.array(["agent"] * n, dtype=object), speakers)
    fold = SimpleNamespace(train_eps=np.arange(180), held_eps=np.arange(180, n_episodes),
                           states=rng.normal(size=(n, rank)), codes=rng.normal(size=(n, rank)))
    return seq, fold, rng


def _labels(n: int, **given: np.ndarray) -> EpisodeLabels:
    empty = dict(winner=np.array(["unknown"] * n, dtype=object), deal=np.array(["unknown"] * n, dtype=object),
                 mistake_step=np.full(n, -1), mistake_agent=np.array([None] * n, dtype=object))
    return EpisodeLabels(**{**empty, **given})


def _accuracy(records: ProbeRecords, name: str, column: int) -> float:
    return float(np.mean([bool(r[column]) for r in records.rows[name]]))


@pytest.mark.parametrize("shuffled", [False, True])
def test_the_step_probe_finds_a_planted_decisive_message_and_not_a_shuffled_one(shuffled: bool) -> None:
    seq, fold, rng = _world()
    steps = rng.integers(0, 10, size=240)
    fold.states[seq.offsets[:-1] + steps, 0] += 4.0  # the latent state marks the decisive message
    labels = _labels(240, mistake_step=rng.permutation(steps) if shuffled else steps)
    out = ProbeRecords()
    probe_mistake_step(seq, fold, labels, "who_when", out)
    latent, memoryless, prior = (_accuracy(out, "mistake_step", c) for c in (1, 2, 3))
    assert len(out.rows["mistake_step"]) == 60
    if shuffled:
        assert latent < 0.3  # chance is 1 in 10
    else:
        assert latent > 0.8 and memoryless < 0.3 and prior < 0.3


@pytest.mark.parametrize("shuffled", [False, True])
def test_the_agent_probe_finds_a_planted_culprit_and_not_a_shuffled_one(shuffled: bool) -> None:
    seq, fold, rng = _world()
    culprits = []
    for e in range(240):
        names = list(dict.fromkeys(seq.speakers[seq.offsets[e]:seq.offsets[e + 1]]))
        culprit = names[int(rng.integers(0, len(names)))]
        rows = seq.offsets[e] + np.flatnonzero(seq.speakers[seq.offsets[e]:seq.offsets[e + 1]] == culprit)
        fold.states[rows, 1] += 3.0
        culprits.append(culprit)
    truth = np.array(culprits, dtype=object)
    labels = _labels(240, mistake_agent=rng.permutation(truth) if shuffled else truth)
    out = ProbeRecords()
    probe_mistake_agent(seq, fold, labels, "who_when", out)
    latent, memoryless = _accuracy(out, "mistake_agent", 1), _accuracy(out, "mistake_agent", 2)
    if shuffled:
        assert latent < 0.6  # chance is ~1 in 3 (most episodes have all three agents)
    else:
        assert latent > 0.9 and memoryless < 0.6


@pytest.mark.parametrize("shuffled", [False, True])
def test_the_deal_probe_curve_finds_a_planted_outcome_and_not_a_shuffled_one(shuffled: bool) -> None:
    seq, fold, rng = _world(source="llm_deliberation")
    outcome = np.where(rng.random(240) < 0.5, "pass", "fail").astype(object)
    fold.states[:, 2] += np.repeat(np.where(outcome == "pass", 1.5, -1.5), 10)  # every round's state knows
    labels = _labels(240, deal=rng.permutation(outcome) if shuffled else outcome)
    out = ProbeRecords()
    probe_deal(seq, fold, labels, "llm_deliberation", out, seed=0)
    rows = out.rows["deal"]
    assert len(rows) == 60 * 10 and {r[1] for r in rows} == set(range(1, 11))  # (episode, round) pairs
    latent, memoryless = _accuracy(out, "deal", 2), _accuracy(out, "deal", 3)
    if shuffled:
        assert 0.35 < latent < 0.65
    else:
        assert latent > 0.85 and memoryless < 0.65


@pytest.mark.parametrize("shuffled", [False, True])
def test_the_winner_probe_finds_a_planted_winner_and_not_a_shuffled_one(shuffled: bool) -> None:
    seq, fold, rng = _world(source="mt_bench_repro")
    winner = np.where(rng.random(240) < 0.5, "agent_1", "agent_2").astype(object)
    final = seq.offsets[1:] - 1
    fold.states[final, 0] += np.where(winner == "agent_1", 2.0, -2.0)
    labels = _labels(240, winner=rng.permutation(winner) if shuffled else winner)
    out = ProbeRecords()
    probe_winner(seq, fold, labels, "mt_bench_repro", out, seed=0)
    latent = _accuracy(out, "winner", 1)
    assert (0.3 < latent < 0.7) if shuffled else latent > 0.85


def test_the_conditional_logit_prefers_the_marked_candidate_and_classify_handles_one_class() -> None:
    rng = np.random.default_rng(1)
    train = [rng.normal(size=(5, 2)) for _ in range(50)]
    choice = [int(rng.integers(0, 5)) for _ in train]
    for x, c in zip(train, choice, strict=True):
        x[c, 0] += 3.0
    test = [rng.normal(size=(5, 2)) for _ in range(20)]
    for x in test:
        x[2, 0] += 6.0
    assert all(int(np.argmax(s)) == 2 for s in conditional_logit(train, choice, test))
    assert classify(np.zeros((3, 2)), np.array(["pass"] * 3, dtype=object), np.zeros((2, 2))).tolist() == ["pass"] * 2


def test_the_top_level_winner_probe_survives_a_training_fold_with_one_outcome() -> None:
    # Two outcomes overall, but holding out question q0 (the only "agent_1" one) leaves a single class to fit.
    rng = np.random.default_rng(0)
    questions = np.repeat(np.array(["q0", "q1", "q2"], dtype=object), 6)
    labels = np.where(questions == "q0", "agent_1", "agent_2").astype(object)
    features = np.where(labels == "agent_1", 1.0, -1.0)[:, None] + 0.1 * rng.normal(size=(18, 3))
    result = winner_probe(features, labels, questions, folds=3, seed=0)
    assert result["probe_one_class_folds"] == 1 and result["probe_folds"] == 3
    # That fold predicts its one class ("agent_2", wrong on all of q0); the others separate the classes.
    assert result["probe_accuracy"] == pytest.approx(12 / 18)
