"""Cross-fitted, per-source evaluation of the latent states against memoryless baselines, with group bootstraps.

Protocol. Groups (``group_id``) are dealt into ``latent.eval_folds`` folds per source; fold 0 is the
published model's held-out split (``split_groups``). For each fold a model is trained exactly like the
published one (``fit_fold``: a validation pass that picks the number of epochs on validation groups carved
from *its* training groups, then a refit on all of them for that many epochs) without that fold's groups,
and scored on them: every group is held out exactly once. The probes
of a fold are fitted on its training episodes (their states under that fold's model) and scored on its
held-out episodes; nothing is tuned on held-out groups. Every model-minus-baseline difference gets a
seeded 95% percentile bootstrap over held-out groups (groups resampled with replacement); a win counts
only when the interval excludes zero.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.decomposition import PCA

from coordset.latent import LatentSettings, Sequences, validation_groups
from coordset.latent.baselines import RidgeNext
from coordset.latent.model import Coordinator, Data, Fit, deterministic_torch, new_model, predict, refit_readouts, train
from coordset.latent.probes import classify, conditional_logit, majority, position_bins

WHO_WHEN_PAPER = {"agent_accuracy": 0.535, "step_accuracy": 0.142,
                  "note": ("Who&When (Zhang et al., ICML 2025), best LLM method per level. Protocols differ: theirs "
                           "is zero-shot judging of each log by an LLM; ours is a supervised linear probe fitted on "
                           "training tasks and scored on held-out tasks, so the figures are not a like-for-like "
                           "comparison.")}
FEW_GROUPS = 5  # below this many held-out groups a group bootstrap says little; the metrics say so


def sig(value: float | None, digits: int = 6) -> float | None:
    """``digits`` significant digits (errors are ~1e-3 and their differences ~1e-5)."""
    return None if value is None or not np.isfinite(value) else float(f"{value:.{digits}g}")


# --- the bootstrap ------------------------------------------------------------------------------------------


def resample_weights(n_groups: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_groups) counts: how often each group is drawn in each resample (with replacement)."""
    rng = np.random.default_rng(seed)
    if n_groups == 0:
        return np.zeros((n_boot, 0))
    return rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_boot).astype(float)


def compare(sums: np.ndarray, value: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], higher_is_better: bool,
            n_boot: int, seed: int) -> dict[str, Any]:
    """Model vs baseline from per-group sufficient sums (G, k), with a 95% bootstrap interval over groups.

    ``value`` maps summed columns (..., k) to (model, baseline). ``difference`` is model - baseline; ``win``
    is true when the interval lies entirely on the better side of zero.
    """
    sums = np.asarray(sums, dtype=float)
    n_groups = len(sums)
    if n_groups == 0:
        return {"model": None, "baseline": None, "difference": None, "ci95": None, "win": False, "groups": 0}
    model, base = (float(v) for v in value(sums.sum(axis=0)))
    out: dict[str, Any] = {"model": sig(model), "baseline": sig(base), "difference": sig(model - base)}
    if n_groups < 2:
        out.update(ci95=None, win=False, groups=n_groups, note="one held-out group: no interval, no win")
        return out
    boot_model, boot_base = value(resample_weights(n_groups, n_boot, seed) @ sums)
    diff = boot_model - boot_base
    diff = diff[np.isfinite(diff)]
    lo, hi = (float(v) for v in np.percentile(diff, [2.5, 97.5]))
    out.update(ci95=[sig(lo), sig(hi)], win=bool(lo > 0 if higher_is_better else hi < 0), groups=n_groups,
               better="higher" if higher_is_better else "lower")
    if n_groups < FEW_GROUPS:
        out["note"] = f"only {n_groups} held-out groups: the interval is coarse"
    return out


def _ratio(num: int, den: int, num2: int) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    def value(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(invalid="ignore", divide="ignore"):
            return s[..., num] / s[..., den], s[..., num2] / s[..., den]
    return value


def _explained(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1 - s[..., 0] / s[..., 2], 1 - s[..., 1] / s[..., 2]


def group_sums(groups: np.ndarray, columns: list[np.ndarray], order: np.ndarray) -> np.ndarray:
    """(G, k) sums of each column per group, groups in ``order``."""
    index = {g: i for i, g in enumerate(order)}
    idx = np.array([index[g] for g in groups], dtype=int)
    return np.stack([np.bincount(idx, weights=np.asarray(c, float), minlength=len(order)) for c in columns], axis=1)


# --- fitting one fold ---------------------------------------------------------------------------------------


@dataclass
class FoldFit:
    fold: int
    train_eps: np.ndarray
    held_eps: np.ndarray
    ridge: RidgeNext
    model: Coordinator
    fit: Fit
    data: Data
    states: np.ndarray      # (N, rank) the model's state after every message
    recon: np.ndarray       # (N, D)
    next_pred: np.ndarray   # (N, D) prediction of message t+1 made at message t
    ridge_next: np.ndarray  # (N, D) the memoryless ridge's prediction
    pca: PCA
    codes: np.ndarray       # (N, rank) PCA codes of every message
    pca_recon: np.ndarray   # (N, D)
    seconds: float = 0.0
    validation: Fit | None = None  # the validation pass that chose ``fit.best_epoch`` (None: no validation groups)


def fit_fold(seq: Sequences, groups: np.ndarray, held: np.ndarray, settings: LatentSettings,
             source_index: dict[str, int], progress: bool, desc: str, fold: int = 0) -> FoldFit:
    """Train on the episodes not in ``held`` (bool per episode), in two passes; PCA of the same rank on the
    training messages.

    1. Validation pass: validation groups are carved from the training groups, and everything the validation
       loss depends on -- the ridge f, the PCA initialisation, the gradient steps, the read-outs -- is fitted
       on the other training groups; early stopping picks the number of epochs (0: the initial cell).
    2. Refit: ridge, initialisation and that many epochs on all training groups: the fold's model.

    Fitting the ridge and the PCA on all training groups in one pass (as before) scored epoch 0 in sample on
    the validation groups and later epochs out of sample, so epoch 0 always won and the cell stayed untrained.
    Nothing is chosen on held-out groups. Without validation groups, ``latent.epochs`` epochs, the last kept.
    """
    assert seq.sources is not None
    start = time.perf_counter()
    train_eps, held_eps = np.flatnonzero(~held), np.flatnonzero(held)
    val = validation_groups(groups[train_eps], seq.sources[train_eps], settings.validation_fraction,
                            settings.seed + fold)
    is_val = np.array([g in val for g in groups[train_eps]], dtype=bool)
    fit_eps, val_eps = train_eps[~is_val], train_eps[is_val]
    validation, epochs = None, settings.epochs
    if len(val_eps):
        ridge = RidgeNext().fit(seq, fit_eps, groups)
        model = new_model(seq, fit_eps, settings, len(source_index))
        validation = train(Data(seq, model, ridge, source_index), model, fit_eps, val_eps, settings, groups,
                           progress=progress, desc=f"{desc} (choose epochs)")
        epochs = validation.best_epoch
        del model, ridge
    ridge = RidgeNext().fit(seq, train_eps, groups)
    model = new_model(seq, train_eps, settings, len(source_index))
    data = Data(seq, model, ridge, source_index)
    fit = train(data, model, train_eps, np.zeros(0, dtype=int), settings, groups, progress=progress,
                desc=f"{desc} (refit, {epochs} epochs)", epochs=epochs)
    with deterministic_torch(settings.seed):
        fit.alphas = refit_readouts(model, data, train_eps, groups)  # final read-outs on every training group
    states, recon, nxt = predict(model, data)
    train_x = seq.embeddings[seq.rows_of(train_eps)]
    pca = PCA(n_components=settings.rank, svd_solver="full", random_state=settings.seed).fit(train_x)
    codes = pca.transform(seq.embeddings).astype(np.float32)
    pca_recon = pca.inverse_transform(codes).astype(np.float32)
    ridge_next = data.base * float(model.spread) + model.center.numpy()
    return FoldFit(fold, train_eps, held_eps, ridge, model, fit, data, states, recon, nxt, ridge_next, pca, codes,
                   pca_recon, time.perf_counter() - start, validation)


# --- probes on native labels, one fold at a time ------------------------------------------------------------


@dataclass
class EpisodeLabels:
    """What the probes predict, per episode (None / NA where a source has no such label)."""

    winner: np.ndarray         # mt_bench_repro: agent_1 / agent_2 / tie / unknown
    deal: np.ndarray           # llm_deliberation: pass / fail / unknown
    mistake_step: np.ndarray   # who_when: message position, -1 none
    mistake_agent: np.ndarray  # who_when: agent name, None none


@dataclass
class ProbeRecords:
    """Held-out probe outcomes, accumulated over folds: per probe, rows of (episode, extra, correctness...)."""

    rows: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)

    def add(self, name: str, row: tuple[Any, ...]) -> None:
        self.rows.setdefault(name, []).append(row)


def _final_rows(seq: Sequences, eps: np.ndarray) -> np.ndarray:
    return seq.offsets[eps + 1] - 1


def probe_winner(seq: Sequences, f: FoldFit, labels: EpisodeLabels, source: str, out: ProbeRecords,
                 seed: int) -> None:
    """Head-to-head winner (agent_1 / agent_2 / tie) from the state after the last message vs the last
    message's PCA code; prior: the training majority."""
    def known(eps: np.ndarray) -> np.ndarray:
        return eps[(seq.sources[eps] == source) & (labels.winner[eps] != "unknown")]
    tr, te = known(f.train_eps), known(f.held_eps)
    if len(te) == 0 or len(tr) == 0:
        return
    y_tr, y_te = labels.winner[tr], labels.winner[te]
    latent = classify(f.states[_final_rows(seq, tr)], y_tr, f.states[_final_rows(seq, te)], seed)
    memoryless = classify(f.codes[_final_rows(seq, tr)], y_tr, f.codes[_final_rows(seq, te)], seed)
    prior = majority(y_tr, len(te))
    for i, e in enumerate(te):
        out.add("winner", (e, latent[i] == y_te[i], memoryless[i] == y_te[i], prior[i] == y_te[i]))


def probe_deal(seq: Sequences, f: FoldFit, labels: EpisodeLabels, source: str, out: ProbeRecords,
               seed: int) -> None:
    """Does p1's final deal pass, from the state after each round (turn) r, vs the PCA code of round r's last
    message; prior: the training majority at that round. One probe per round, on the episodes that reach it."""
    def known(eps: np.ndarray) -> np.ndarray:
        return eps[(seq.sources[eps] == source) & np.isin(labels.deal[eps], ["pass", "fail"])]
    tr, te = known(f.train_eps), known(f.held_eps)
    if len(te) == 0 or len(tr) == 0:
        return
    rounds = max(len(seq.turn_ends[e]) for e in np.concatenate([tr, te]))
    for r in range(rounds):
        tr_r = np.array([e for e in tr if len(seq.turn_ends[e]) > r], dtype=int)
        te_r = np.array([e for e in te if len(seq.turn_ends[e]) > r], dtype=int)
        if len(te_r) == 0 or len(tr_r) == 0:
            continue
        row_tr = np.array([seq.offsets[e] + seq.turn_ends[e][r][1] for e in tr_r])
        row_te = np.array([seq.offsets[e] + seq.turn_ends[e][r][1] for e in te_r])
        y_tr, y_te = labels.deal[tr_r], labels.deal[te_r]
        latent = classify(f.states[row_tr], y_tr, f.states[row_te], seed)
        memoryless = classify(f.codes[row_tr], y_tr, f.codes[row_te], seed)
        prior = majority(y_tr, len(te_r))
        for i, e in enumerate(te_r):
            out.add("deal", (e, r + 1, latent[i] == y_te[i], memoryless[i] == y_te[i], prior[i] == y_te[i]))


def _step_candidates(seq: Sequences, e: int, vectors: np.ndarray | None) -> np.ndarray:
    a, b = seq.offsets[e], seq.offsets[e + 1]
    bins = position_bins(np.arange(b - a))
    return bins if vectors is None else np.hstack([vectors[a:b], bins])


def probe_mistake_step(seq: Sequences, f: FoldFit, labels: EpisodeLabels, source: str, out: ProbeRecords) -> None:
    """Which message is the decisive error: a conditional logit over the episode's messages on [state after the
    message, position bins] vs [its PCA code, position bins]; prior: position bins alone (the position prior)."""
    def known(eps: np.ndarray) -> np.ndarray:
        return eps[(seq.sources[eps] == source) & (labels.mistake_step[eps] >= 0)]
    tr, te = known(f.train_eps), known(f.held_eps)
    if len(te) == 0 or len(tr) == 0:
        return
    choice = [int(labels.mistake_step[e]) for e in tr]
    picks = {}
    for name, vectors in (("latent", f.states), ("memoryless", f.codes), ("prior", None)):
        scores = conditional_logit([_step_candidates(seq, e, vectors) for e in tr], choice,
                                   [_step_candidates(seq, e, vectors) for e in te])
        picks[name] = [int(np.argmax(s)) for s in scores]
    for i, e in enumerate(te):
        true = int(labels.mistake_step[e])
        out.add("mistake_step", (e, *(picks[k][i] == true for k in ("latent", "memoryless", "prior")),
                                 *(abs(picks[k][i] - true) <= 1 for k in ("latent", "memoryless", "prior"))))


def _agent_candidates(seq: Sequences, e: int, vectors: np.ndarray | None) -> tuple[list[str], np.ndarray]:
    """Per agent of the episode: the mean of ``vectors`` over its messages, its share of the messages and the
    order in which it first spoke (one-hot, 4 = fourth or later)."""
    a, b = seq.offsets[e], seq.offsets[e + 1]
    speakers, roles = seq.speakers[a:b], seq.roles[a:b]
    names = list(dict.fromkeys(s for s, r in zip(speakers, roles, strict=True) if r == "agent"))
    rows = []
    for order, name in enumerate(names):
        mine = np.flatnonzero(speakers == name)
        extra = np.zeros(5)
        extra[0] = len(mine) / (b - a)
        extra[1 + min(order, 3)] = 1.0
        rows.append(extra if vectors is None else np.concatenate([vectors[a + mine].mean(axis=0), extra]))
    return names, np.array(rows)


def probe_mistake_agent(seq: Sequences, f: FoldFit, labels: EpisodeLabels, source: str, out: ProbeRecords) -> None:
    """Which agent made the decisive error: a conditional logit over the episode's agents on [mean state over
    the agent's messages, its share and speaking order] vs the same with PCA codes; prior: share and order."""
    def known(eps: np.ndarray) -> np.ndarray:
        keep = [e for e in eps if seq.sources[e] == source and labels.mistake_agent[e] is not None
                and labels.mistake_agent[e] in _agent_candidates(seq, e, None)[0]]
        return np.array(keep, dtype=int)
    tr, te = known(f.train_eps), known(f.held_eps)
    if len(te) == 0 or len(tr) == 0:
        return
    picks = {}
    for name, vectors in (("latent", f.states), ("memoryless", f.codes), ("prior", None)):
        train_c = [_agent_candidates(seq, e, vectors) for e in tr]
        test_c = [_agent_candidates(seq, e, vectors) for e in te]
        scores = conditional_logit([x for _, x in train_c],
                                   [names.index(labels.mistake_agent[e]) for (names, _), e in zip(train_c, tr,
                                                                                                 strict=True)],
                                   [x for _, x in test_c])
        picks[name] = [names[int(np.argmax(s))] for (names, _), s in zip(test_c, scores, strict=True)]
    for i, e in enumerate(te):
        true = labels.mistake_agent[e]
        out.add("mistake_agent", (e, *(picks[k][i] == true for k in ("latent", "memoryless", "prior"))))


def run_probes(seq: Sequences, f: FoldFit, labels: EpisodeLabels, out: ProbeRecords, seed: int) -> None:
    """Every native-label probe this build's sources support, on fold ``f``'s held-out episodes."""
    present = set(seq.sources)
    if "mt_bench_repro" in present:
        probe_winner(seq, f, labels, "mt_bench_repro", out, seed)
    if "llm_deliberation" in present:
        probe_deal(seq, f, labels, "llm_deliberation", out, seed)
    if "who_when" in present:
        probe_mistake_step(seq, f, labels, "who_when", out)
        probe_mistake_agent(seq, f, labels, "who_when", out)


# --- pooling held-out predictions over folds ----------------------------------------------------------------


class Pooled:
    """Per-message squared errors on held-out messages, filled fold by fold (NaN: not yet held out)."""

    def __init__(self, n_messages: int) -> None:
        def empty() -> np.ndarray:
            return np.full(n_messages, np.nan)
        self.recon_model, self.recon_pca, self.total = empty(), empty(), empty()
        self.next_model, self.next_ridge, self.next_copy = empty(), empty(), empty()
        self.probes = ProbeRecords()
        self.best_epochs: list[int] = []
        self.validation_gains: list[float | None] = []
        self.seconds: list[float] = []

    def add(self, seq: Sequences, f: FoldFit) -> None:
        assert seq.sources is not None
        x = seq.embeddings
        source_of_row = seq.sources[seq.episode_of_row()]
        rows = seq.rows_of(f.held_eps)
        train_rows = seq.rows_of(f.train_eps)
        for source in sorted(set(source_of_row[rows])):
            mine = rows[source_of_row[rows] == source]
            theirs = train_rows[source_of_row[train_rows] == source]
            mean = x[theirs].mean(axis=0) if len(theirs) else x[train_rows].mean(axis=0)
            self.total[mine] = ((x[mine] - mean) ** 2).sum(axis=1)  # around the source's training mean
        self.recon_model[rows] = ((x[rows] - f.recon[rows]) ** 2).sum(axis=1)
        self.recon_pca[rows] = ((x[rows] - f.pca_recon[rows]) ** 2).sum(axis=1)
        current, nxt = seq.pairs_of(f.held_eps)
        self.next_model[current] = ((x[nxt] - f.next_pred[current]) ** 2).sum(axis=1)
        self.next_ridge[current] = ((x[nxt] - f.ridge_next[current]) ** 2).sum(axis=1)
        self.next_copy[current] = ((x[nxt] - x[current]) ** 2).sum(axis=1)
        self.best_epochs.append(f.fit.best_epoch)
        self.validation_gains.append(validation_gain(f.validation))
        self.seconds.append(f.seconds)


def validation_gain(validation: Fit | None) -> float | None:
    """How much lower the validation loss is at the chosen epoch than at epoch 0 (the initial cell), as a share of
    the latter: 0 when training never improved on the initialisation; None without a validation pass."""
    if validation is None or not validation.history:
        return None
    loss = {row["epoch"]: row["validation_loss"] for row in validation.history}
    initial, best = loss.get(0), loss.get(validation.best_epoch)
    if initial is None or best is None or not initial > 0:
        return None
    return sig((initial - best) / initial, 4)


def _probe_summary(rows: list[tuple[Any, ...]], groups: np.ndarray, columns: dict[str, int], n_boot: int,
                   seed: int) -> dict[str, Any]:
    """Accuracy of the latent probe vs the memoryless one and vs the prior, per ``columns`` (name -> first of
    three consecutive correctness columns: latent, memoryless, prior)."""
    episodes = np.array([r[0] for r in rows], dtype=int)
    g = groups[episodes]
    order = np.array(sorted(set(g)), dtype=object)
    out: dict[str, Any] = {"episodes": len(set(episodes.tolist())), "rows": len(rows), "groups": len(order)}
    for name, first in columns.items():
        latent, memoryless, prior = (np.array([bool(r[first + i]) for r in rows], float) for i in range(3))
        sums = group_sums(g, [latent, memoryless, prior, np.ones(len(rows))], order)
        out[name] = {
            "latent": sig(latent.mean()), "memoryless": sig(memoryless.mean()), "prior": sig(prior.mean()),
            "latent_vs_memoryless": compare(sums, _ratio(0, 3, 1), True, n_boot, seed),
            "latent_vs_prior": compare(sums, _ratio(0, 3, 2), True, n_boot, seed),
            "memoryless_vs_prior": compare(sums, _ratio(1, 3, 2), True, n_boot, seed),
        }
    return out


def deal_curve(rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """Held-out accuracy per round of the deal probe (rows: episode, round, latent, memoryless, prior)."""
    out = []
    for r in sorted({row[1] for row in rows}):
        mine = [row for row in rows if row[1] == r]
        out.append({"round": r, "episodes": len(mine),
                    **{name: round(float(np.mean([bool(row[2 + i]) for row in mine])), 6)
                       for i, name in enumerate(("latent_accuracy", "memoryless_accuracy", "prior_accuracy"))}})
    return out


def by_source(seq: Sequences, groups: np.ndarray, pooled: Pooled, settings: LatentSettings,
              compression: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Per source, over its held-out groups (every group, once): reconstruction vs PCA, next message vs the
    memoryless ridge and vs copying (overall and per position class), native-label probes, compression."""
    assert seq.sources is not None and seq.roles is not None
    n_boot, seed = settings.bootstrap, settings.seed
    dim = seq.dim
    episode_of_row = seq.episode_of_row()
    source_of_row = seq.sources[episode_of_row]
    group_of_row = groups[episode_of_row]
    out: dict[str, Any] = {}
    for source in sorted(set(seq.sources)):
        rows = np.flatnonzero((source_of_row == source) & np.isfinite(pooled.recon_model))
        if len(rows) == 0:
            continue
        g = group_of_row[rows]
        order = np.array(sorted(set(g)), dtype=object)
        res: dict[str, Any] = {"groups": len(order), "episodes": int(len(set(episode_of_row[rows]))),
                               "messages": int(len(rows))}
        sums = group_sums(g, [pooled.recon_model[rows], pooled.recon_pca[rows], pooled.total[rows]], order)
        ev = compare(sums, _explained, True, n_boot, seed)
        err = group_sums(g, [pooled.recon_model[rows], pooled.recon_pca[rows], np.full(len(rows), dim)], order)
        ratio = ev["model"] / ev["baseline"] if ev["baseline"] else None
        res["reconstruction"] = {
            "explained_variance_vs_pca": ev,
            "error_vs_pca": compare(err, _ratio(0, 2, 1), False, n_boot, seed),
            "share_of_pca_explained_variance": sig(ratio),
            "within_5pct_of_pca": bool(ratio is not None and ratio >= 0.95),
        }
        pairs = rows[np.isfinite(pooled.next_model[rows])]
        if len(pairs):
            gp = group_of_row[pairs]
            order_p = np.array(sorted(set(gp)), dtype=object)
            cols = [pooled.next_model[pairs], pooled.next_ridge[pairs], pooled.next_copy[pairs],
                    np.full(len(pairs), dim)]
            s = group_sums(gp, cols, order_p)
            vs_ridge = compare(s, _ratio(0, 3, 1), False, n_boot, seed)
            nm: dict[str, Any] = {
                "pairs": int(len(pairs)),
                "vs_memoryless_ridge": vs_ridge,
                "vs_copy_current": compare(s, _ratio(0, 3, 2), False, n_boot, seed),
                "memoryless_ridge_vs_copy_current": compare(s, _ratio(1, 3, 2), False, n_boot, seed),
                "relative_gain_over_ridge": sig(1 - vs_ridge["model"] / vs_ridge["baseline"])
                if vs_ridge["baseline"] else None,
            }
            position_class = np.array([f"{seq.roles[r + 1]}_after_{seq.roles[r]}" for r in pairs], dtype=object)
            nm["by_position"] = {}
            for cls in sorted(set(position_class)):
                pick = position_class == cls
                gc = gp[pick]
                order_c = np.array(sorted(set(gc)), dtype=object)
                sc = group_sums(gc, [c[pick] for c in cols], order_c)
                nm["by_position"][cls] = {
                    "pairs": int(pick.sum()),
                    "vs_memoryless_ridge": compare(sc, _ratio(0, 3, 1), False, n_boot, seed),
                    "copy_current_error": sig(float(sc[:, 2].sum() / sc[:, 3].sum())),
                }
            res["next_message"] = nm
        res["probes"] = {}
        if source == "mt_bench_repro" and pooled.probes.rows.get("winner"):
            res["probes"]["winner"] = _probe_summary(pooled.probes.rows["winner"], groups, {"accuracy": 1},
                                                     n_boot, seed)
        if source == "llm_deliberation" and pooled.probes.rows.get("deal"):
            rows_d = pooled.probes.rows["deal"]
            summary = _probe_summary([(r[0], *r[2:]) for r in rows_d], groups, {"accuracy_over_rounds": 1},
                                     n_boot, seed)
            finals = {}
            for r in rows_d:  # each episode's last round: the state after p1's final deal
                finals[r[0]] = r if r[0] not in finals or r[1] > finals[r[0]][1] else finals[r[0]]
            summary["final_round"] = _probe_summary([(r[0], *r[2:]) for r in finals.values()], groups,
                                                    {"accuracy": 1}, n_boot, seed)
            summary["curve"] = "metrics/latent_deal_curve.csv"
            res["probes"]["deal_passes"] = summary
        if source == "who_when":
            if pooled.probes.rows.get("mistake_step"):
                res["probes"]["mistake_step"] = _probe_summary(
                    pooled.probes.rows["mistake_step"], groups, {"top1_accuracy": 1, "within_one_step": 4},
                    n_boot, seed)
            if pooled.probes.rows.get("mistake_agent"):
                res["probes"]["mistake_agent"] = _probe_summary(pooled.probes.rows["mistake_agent"], groups,
                                                                {"accuracy": 1}, n_boot, seed)
            res["probes"]["who_when_paper_best_llm"] = WHO_WHEN_PAPER
        if source in compression:
            res["compression"] = {**compression[source],
                                  "keeps_explained_variance": ev["model"],
                                  "keeps_next_message_gain_over_ridge": res.get("next_message", {}).get(
                                      "relative_gain_over_ridge")}
        out[source] = res
    return out
