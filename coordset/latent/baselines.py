"""Memoryless baselines fitted on training groups only: a ridge next-message predictor and PCA codes."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import GroupKFold

from coordset.latent import ROLE_SLOTS, Sequences

ALPHAS = tuple(float(a) for a in np.logspace(-1, 5, 13))  # ridge penalties tried (features standardized)


def _ridge_path(x: np.ndarray, y: np.ndarray, center: bool = True
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """SVD pieces (of centered data, or of the raw data with ``center=False``: no intercept) from which the
    ridge solution for any penalty is cheap."""
    x_mean = x.mean(axis=0) if center else np.zeros(x.shape[1])
    y_mean = y.mean(axis=0) if center else np.zeros(y.shape[1])
    u, s, vt = np.linalg.svd(x - x_mean, full_matrices=False)
    return x_mean, y_mean, vt, s, u.T @ (y - y_mean)


def _coefs(vt: np.ndarray, s: np.ndarray, uty: np.ndarray, alpha: float) -> np.ndarray:
    return vt.T @ ((s / (s ** 2 + alpha))[:, None] * uty)


def ridge_fit(x: np.ndarray, y: np.ndarray, alpha: float, center: bool = True
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coefficients and the x and y means (zeros without ``center``): prediction = y_mean + (x - x_mean) @ coef."""
    x_mean, y_mean, vt, s, uty = _ridge_path(x, y, center)
    return _coefs(vt, s, uty, alpha), x_mean, y_mean


def choose_alpha(x: np.ndarray, y: np.ndarray, units: np.ndarray, alphas: tuple[float, ...] = ALPHAS,
                 center: bool = True) -> float:
    """The penalty with the lowest grouped-CV squared error (folds by ``units``; the middle one if < 2 units)."""
    n_units = len(set(units))
    if n_units < 2:
        return alphas[len(alphas) // 2]
    errors = np.zeros(len(alphas))
    for fit_idx, val_idx in GroupKFold(n_splits=min(5, n_units)).split(x, y, units):
        errors += _validation_errors(x[fit_idx], y[fit_idx], x[val_idx], y[val_idx], alphas, center)
    return alphas[int(np.argmin(errors))]


def _validation_errors(x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                       alphas: tuple[float, ...], center: bool) -> np.ndarray:
    """Summed squared error on (x_val, y_val) of the ridge fitted on (x, y), for every penalty.

    With x'x = V diag(e) V', the ridge's validation residual is r + P diag(1 / (e + alpha)) Q (r = y mean -
    y_val, P = centered x_val V, Q = V' x'y), so each penalty's squared error takes only d x d sums: no
    (validation rows x outputs) prediction per penalty and no SVD of the fit rows (together most of the
    latent stage's time when every fold fits its ridges twice). Only the argmin is used.
    """
    x_mean = x.mean(axis=0) if center else np.zeros(x.shape[1])
    y_mean = y.mean(axis=0) if center else np.zeros(y.shape[1])
    xc = x - x_mean
    evals, vecs = np.linalg.eigh(xc.T @ xc)
    evals = np.clip(evals, 0.0, None)  # x'x is positive semi-definite: tiny negatives are rounding
    q = vecs.T @ (xc.T @ (y - y_mean))
    p = (x_val - x_mean) @ vecs
    r = y_mean - y_val
    cross = ((p.T @ r) * q).sum(axis=1)
    quad = (p.T @ p) * (q @ q.T)
    base = float((r ** 2).sum())
    out = np.empty(len(alphas))
    for i, alpha in enumerate(alphas):
        f = 1.0 / (evals + alpha)
        out[i] = base + 2.0 * float(f @ cross) + float(f @ quad @ f)
    return out


class RidgeNext:
    """Per source: ridge regression from the current message embedding to the next one, with an unpenalized
    intercept per speaker slot of the current message (the one-hot of who spoke), fitted on training pairs; the
    penalty is chosen by grouped CV over the training groups (by episode where a source has one group)."""

    def __init__(self, alphas: tuple[float, ...] = ALPHAS) -> None:
        self.alphas = alphas
        self.models: dict[str, dict[str, np.ndarray]] = {}
        self.alpha: dict[str, float] = {}

    def fit(self, seq: Sequences, train_eps: np.ndarray, groups: np.ndarray) -> RidgeNext:
        """``groups``: each episode's group_id (all episodes of ``seq``)."""
        assert seq.sources is not None
        for source in sorted(set(seq.sources[train_eps])):
            eps = train_eps[seq.sources[train_eps] == source]
            current, nxt = seq.pairs_of(eps)
            if len(current) < 2:
                continue
            x, y = seq.embeddings[current].astype(np.float64), seq.embeddings[nxt].astype(np.float64)
            slots = seq.slots[current]
            x_mean, y_mean = np.tile(x.mean(axis=0), (ROLE_SLOTS, 1)), np.tile(y.mean(axis=0), (ROLE_SLOTS, 1))
            for slot in np.unique(slots):
                x_mean[slot], y_mean[slot] = x[slots == slot].mean(axis=0), y[slots == slot].mean(axis=0)
            xc, yc = x - x_mean[slots], y - y_mean[slots]
            sd = xc.std(axis=0)
            sd[sd < 1e-8] = 1.0
            xs = xc / sd
            episode_of = seq.episode_of_row()[current]
            pair_groups = groups[episode_of]
            units = pair_groups if len(set(pair_groups)) >= 2 else episode_of
            alpha = choose_alpha(xs, yc, units, self.alphas)
            coef, xs_mean, yc_mean = ridge_fit(xs, yc, alpha)
            self.models[source] = {"x_mean": x_mean, "y_mean": y_mean + yc_mean, "sd": sd, "coef": coef,
                                   "xs_mean": xs_mean}
            self.alpha[source] = alpha
        return self

    def predict(self, seq: Sequences) -> np.ndarray:
        """(N, D): for every message, the prediction of the message after it (the current one where its source
        has no fitted model)."""
        assert seq.sources is not None
        out = seq.embeddings.astype(np.float64).copy()
        source_of_row = seq.sources[seq.episode_of_row()]
        for source, m in self.models.items():
            rows = np.flatnonzero(source_of_row == source)
            if len(rows):
                slots = seq.slots[rows]
                xs = (seq.embeddings[rows] - m["x_mean"][slots]) / m["sd"]
                out[rows] = m["y_mean"][slots] + (xs - m["xs_mean"]) @ m["coef"]
        return out.astype(np.float32)
