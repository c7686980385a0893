"""Probes from per-message vectors to native labels, fitted on training episodes and scored on held-out ones.

Each probe is fitted three times on the same episodes: on the latent states, on same-size memoryless
vectors (the PCA codes of the same messages, same rank) and on the prior alone (majority class, or the
position / agent features every probe also gets). Features are standardized on the training episodes and
the penalty is fixed (no tuning), so nothing here looks at held-out labels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import minimize
from sklearn.linear_model import LogisticRegression

L2 = 1.0  # ridge penalty of every probe, on standardized features
POSITION_BINS = (0, 1, 2, 3, 4, 6, 9, 14, 22, 35)  # left edges of the message-position bins (Who&When steps)


def _standardizer(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, sd = train.mean(axis=0), train.std(axis=0)
    sd[sd < 1e-8] = 1.0
    return mean, sd


def classify(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, seed: int = 0) -> np.ndarray:
    """Logistic regression (multinomial, L2 = ``L2``) on standardized features; one class in train: that class."""
    classes = np.unique(train_y)
    if len(classes) < 2 or len(test_x) == 0:
        return np.full(len(test_x), classes[0] if len(classes) else None, dtype=object)
    mean, sd = _standardizer(train_x)
    probe = LogisticRegression(C=1.0 / L2, max_iter=5000, random_state=seed)
    probe.fit((train_x - mean) / sd, train_y)
    return probe.predict((test_x - mean) / sd).astype(object)


def majority(train_y: np.ndarray, n: int) -> np.ndarray:
    values, counts = np.unique(train_y, return_counts=True)
    return np.full(n, values[np.argmax(counts)] if len(values) else None, dtype=object)


def conditional_logit(train: Sequence[np.ndarray], train_choice: Sequence[int], test: Sequence[np.ndarray]
                      ) -> list[np.ndarray]:
    """Pick one candidate per episode: P(candidate j) ∝ exp(w · x_j), w fitted by penalized maximum likelihood.

    ``train``/``test``: per episode a (candidates, features) matrix; ``train_choice``: the true candidate's
    row. Returns each test episode's candidate scores (the argmax is the pick).
    """
    if not train:
        return [np.zeros(len(x)) for x in test]
    mean, sd = _standardizer(np.vstack(train))
    xs = [(x - mean) / sd for x in train]
    stacked = np.vstack(xs)
    owner = np.repeat(np.arange(len(xs)), [len(x) for x in xs])
    chosen = np.cumsum([0] + [len(x) for x in xs[:-1]]) + np.asarray(train_choice)

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        scores = stacked @ w
        top = np.full(len(xs), -np.inf)
        np.maximum.at(top, owner, scores)
        expd = np.exp(scores - top[owner])
        norm = np.bincount(owner, weights=expd, minlength=len(xs))
        log_norm = np.log(norm) + top
        value = -(scores[chosen].sum() - log_norm.sum()) + 0.5 * L2 * float(w @ w)
        prob = expd / norm[owner]
        grad = -(stacked[chosen].sum(axis=0) - prob @ stacked) + L2 * w
        return float(value), grad

    w = minimize(loss, np.zeros(stacked.shape[1]), jac=True, method="L-BFGS-B",
                 options={"maxiter": 500}).x
    return [((x - mean) / sd) @ w for x in test]


def position_bins(positions: np.ndarray) -> np.ndarray:
    """One-hot of each message position's bin (``POSITION_BINS``): the features of the position prior."""
    index = np.searchsorted(np.asarray(POSITION_BINS), positions, side="right") - 1
    out = np.zeros((len(positions), len(POSITION_BINS)))
    out[np.arange(len(positions)), index] = 1.0
    return out
