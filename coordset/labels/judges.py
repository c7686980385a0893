"""Imported LLM judges: per-judge consistency, per-episode verdicts and consensus, inter-judge agreement.

Inputs are the normalized ``judge_verdicts`` table (one row per episode, judge and judged turn, both
orders kept) and ``episodes``. A verdict is turned into an *outcome category* relative to the episode's
agent order (``agent_1`` = ``agent_models[0]``, ``agent_2``, ..., or ``tie``) so that judges can be
compared across episodes whose model pairs differ; the judge files list a pair in either order, so
verdicts are matched to episodes on the unordered model pair.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from coordset.errors import CoordsetError
from coordset.verdicts import ERROR, INCONSISTENT, TIE, UNKNOWN, pair_verdict

# The judge names used by the mt_bench_repro paper (Table 5), keyed by the judge_id in its files.
# Judges not listed here keep their judge_id as name.
JUDGE_SHORT_NAMES: dict[str, str] = {
    "Qwen2.5-7B-Instruct": "Qwen-7B",
    "Qwen2.5-14B-Instruct": "Qwen-14B",
    "Qwen2.5-32B-Instruct": "Qwen-32B",
    "EXAONE-3.5-32B-Instruct-AWQ": "EXAONE-32B",
    "gpt-4o-mini": "GPT-4o-mini",
    "Gemma-4-12B-it": "Gemma-4-12B",
}

CONSISTENT_PAIRS = {("A", "B"), ("B", "A"), (TIE, TIE)}


def judge_name(judge_id: str) -> str:
    return JUDGE_SHORT_NAMES.get(judge_id, judge_id)


def agent_category(index: int) -> str:
    """``agent_1`` for ``agent_models[0]``: 1-based, as agents are numbered in the docs."""
    return f"agent_{index + 1}"


def outcome_category(outcome: str, agent_models: Sequence[str]) -> str:
    """Map a model name to its agent position; ``tie``, ``inconsistent``, ``error`` and ``unknown`` stay."""
    models = list(agent_models)
    if outcome in models:
        return agent_category(models.index(outcome))
    if outcome in (TIE, INCONSISTENT, ERROR, UNKNOWN):
        return outcome
    raise CoordsetError(f"outcome {outcome!r} is neither one of the agents {models} nor tie/unknown")


# ---------------------------------------------------------------------------------------------------------
# Per-judge consistency (position bias): Table 5 of the mt_bench_repro paper.


def judge_consistency(verdicts: pd.DataFrame) -> pd.DataFrame:
    """One row per judge: how often its two orders (AB, BA) agree.

    ``n_valid`` counts verdicts whose two orders were both parsed (neither is ``error``);
    ``n_inconsistent`` those valid ones whose orders disagree (consistent iff (A, B), (B, A) or
    (tie, tie)); ``inconsistency_rate = n_inconsistent / n_valid`` (NaN when nothing is valid).
    Every row of ``verdicts`` counts, whatever turn it judged.
    """
    valid = (verdicts["winner_ab"] != ERROR) & (verdicts["winner_ba"] != ERROR)
    consistent = pd.Series(
        [pair in CONSISTENT_PAIRS for pair in zip(verdicts["winner_ab"], verdicts["winner_ba"], strict=True)],
        index=verdicts.index,
        dtype=bool,
    )
    flags = pd.DataFrame(
        {"judge_id": verdicts["judge_id"], "valid": valid, "inconsistent": valid & ~consistent}
    )
    out = flags.groupby("judge_id", sort=True).agg(
        n_verdicts=("valid", "size"), n_valid=("valid", "sum"), n_inconsistent=("inconsistent", "sum")
    )
    out = out.reset_index()
    out["n_error"] = out["n_verdicts"] - out["n_valid"]
    out["inconsistency_rate"] = (out["n_inconsistent"] / out["n_valid"].where(out["n_valid"] > 0)).astype(
        float
    )
    out.insert(1, "judge_name", out["judge_id"].map(judge_name))
    for column in ("n_verdicts", "n_valid", "n_inconsistent", "n_error"):
        out[column] = out[column].astype("int64")
    return out[
        ["judge_id", "judge_name", "n_verdicts", "n_valid", "n_error", "n_inconsistent", "inconsistency_rate"]
    ].reset_index(drop=True)


def inconsistency_table(consistency: pd.DataFrame, language: str = "en") -> pd.DataFrame:
    """The paper's Table 5 layout: judge (short name), inconsistent, valid, rate in % (2 decimals),
    and a final ``Mean`` row whose rate is the mean of the unrounded per-judge rates."""
    rates = 100.0 * consistency["inconsistency_rate"]
    table = pd.DataFrame(
        {
            "judge": consistency["judge_name"],
            f"{language}_inconsistent": consistency["n_inconsistent"].astype("Int64"),
            f"{language}_valid": consistency["n_valid"].astype("Int64"),
            f"{language}_rate_pct": rates.round(2),
        }
    )
    mean = pd.DataFrame(
        {
            "judge": ["Mean"],
            f"{language}_inconsistent": pd.array([pd.NA], dtype="Int64"),
            f"{language}_valid": pd.array([pd.NA], dtype="Int64"),
            f"{language}_rate_pct": [round(float(rates.mean()), 2)],
        }
    )
    return pd.concat([table, mean], ignore_index=True)


# ---------------------------------------------------------------------------------------------------------
# Per-episode verdicts and consensus.


def episode_verdicts(verdicts: pd.DataFrame, episodes: pd.DataFrame) -> pd.DataFrame:
    """One row per (episode, judge): the judge's verdict on the last turn it judged (the one that saw
    the whole conversation), as ``verdict`` (model name | tie | inconsistent | error) and as
    ``verdict_category`` relative to the episode's agent order (agent_1 | agent_2 | ... | tie |
    inconsistent | error).

    Raises CoordsetError when a verdict names an episode that does not exist or a model pair that is
    not the episode's agents.
    """
    columns = [
        "episode_id",
        "judge_id",
        "judge_name",
        "turn",
        "model_a",
        "model_b",
        "winner_ab",
        "winner_ba",
        "verdict",
        "verdict_category",
    ]
    if verdicts.empty:
        return _empty(columns, {"turn": "int64"})
    last = verdicts.sort_values(["episode_id", "judge_id", "turn"], kind="stable").drop_duplicates(
        ["episode_id", "judge_id"], keep="last"
    )
    agents = episodes.set_index("episode_id")["agent_models"]
    orphans = sorted(set(last["episode_id"]) - set(agents.index))
    if orphans:
        raise CoordsetError(
            f"judge_verdicts: {len(orphans)} episode id(s) not in episodes, e.g. {orphans[0]!r}"
        )
    rows = []
    for row in last.itertuples(index=False):
        models = list(agents[row.episode_id])
        if sorted([row.model_a, row.model_b]) != sorted(models):
            raise CoordsetError(
                f"judge_verdicts: judge {row.judge_id!r} compared ({row.model_a}, {row.model_b}) "
                f"but episode {row.episode_id!r} has agents {models}"
            )
        verdict = pair_verdict(row.winner_ab, row.winner_ba, row.model_a, row.model_b)
        rows.append(
            {
                "episode_id": row.episode_id,
                "judge_id": row.judge_id,
                "judge_name": judge_name(row.judge_id),
                "turn": int(row.turn),
                "model_a": row.model_a,
                "model_b": row.model_b,
                "winner_ab": row.winner_ab,
                "winner_ba": row.winner_ba,
                "verdict": verdict,
                "verdict_category": outcome_category(verdict, models),
            }
        )
    out = pd.DataFrame(rows, columns=columns)
    out["turn"] = out["turn"].astype("int64")
    return out.sort_values(["episode_id", "judge_id"], kind="stable").reset_index(drop=True)


def episode_consensus(per_judge: pd.DataFrame, outcomes: pd.DataFrame) -> pd.DataFrame:
    """One row per episode: the ``consensus`` outcome, where it came from, and how many judges made it.

    The outcome itself is made once, by normalize (for judged sources, ``coordset.verdicts.majority_verdict``
    over each judge's consistent verdict on the last turn it judged; otherwise the source's own outcome:
    a human vote, a human annotation, a game rule, a moderator or judge). This adds ``n_judges`` and
    ``n_consistent_judges`` (0 for unjudged episodes) from the imported verdicts.
    """
    by_episode: dict[str, list[str]] = {}
    for eid, verdict in zip(per_judge["episode_id"], per_judge["verdict"], strict=True):
        by_episode.setdefault(eid, []).append(verdict)
    out = pd.DataFrame({
        "episode_id": outcomes["episode_id"].to_numpy(),
        "consensus": outcomes["outcome"].to_numpy(),
        "consensus_source": outcomes["outcome_source"].to_numpy(),
        "n_judges": [len(by_episode.get(e, [])) for e in outcomes["episode_id"]],
        "n_consistent_judges": [sum(v not in (INCONSISTENT, ERROR) for v in by_episode.get(e, []))
                                for e in outcomes["episode_id"]],
    })
    out = out.astype({"n_judges": "int64", "n_consistent_judges": "int64", "consensus": "str",
                      "consensus_source": "str"})
    return out.sort_values("episode_id", kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------------------
# Agreement statistics.


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa for ``counts[i, j]`` = raters putting item i in category j (same raters per item).

    Returns NaN when undefined: no items, fewer than 2 raters, or all ratings in one category
    (chance agreement P_e = 1).
    """
    counts = np.asarray(counts, dtype=float)
    if counts.ndim != 2 or counts.shape[0] == 0:
        return float("nan")
    raters = counts.sum(axis=1)
    if not np.all(raters == raters[0]):
        raise ValueError("fleiss_kappa needs the same number of ratings for every item")
    n = raters[0]
    if n < 2:
        return float("nan")
    p_j = counts.sum(axis=0) / counts.sum()
    p_i = (np.square(counts).sum(axis=1) - n) / (n * (n - 1))
    p_bar, p_e = p_i.mean(), np.square(p_j).sum()
    if np.isclose(p_e, 1.0):
        return float("nan")
    return float((p_bar - p_e) / (1.0 - p_e))


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float:
    """Cohen's (unweighted) kappa of two raters over the same items; NaN when undefined (no items, or
    both raters always use the same single category so that chance agreement is 1)."""
    a, b = list(a), list(b)
    if len(a) != len(b):
        raise ValueError("cohen_kappa needs two label sequences of equal length")
    if not a:
        return float("nan")
    labels = sorted(set(a) | set(b))
    index = {label: i for i, label in enumerate(labels)}
    table = np.zeros((len(labels), len(labels)))
    for x, y in zip(a, b, strict=True):
        table[index[x], index[y]] += 1
    total = table.sum()
    p_o = np.trace(table) / total
    p_e = float((table.sum(axis=1) * table.sum(axis=0)).sum() / total**2)
    if np.isclose(p_e, 1.0):
        return float("nan")
    return float((p_o - p_e) / (1.0 - p_e))


@dataclass(frozen=True)
class FleissResult:
    kappa: float  # NaN when undefined
    n_episodes: int  # episodes every judge judged consistently (the items used)
    n_judges: int
    categories: list[str]


def judges_fleiss(per_judge: pd.DataFrame) -> FleissResult:
    """Fleiss' kappa of all judges over the categories agent_1 / agent_2 / ... / tie.

    Fleiss needs the same number of ratings per item, and an inconsistent or unparsed verdict is not
    a rating of any category, so only episodes that *every* judge judged consistently are used;
    ``n_episodes`` says how many. Categories are the ones observed on those episodes.
    """
    judges = sorted(per_judge["judge_id"].unique())
    if len(judges) < 2:
        return FleissResult(float("nan"), 0, len(judges), [])
    wide = per_judge.pivot(index="episode_id", columns="judge_id", values="verdict_category")
    usable = wide.notna().all(axis=1) & ~wide.isin([INCONSISTENT, ERROR]).any(axis=1)
    wide = wide[usable]
    categories = sorted(pd.unique(wide.to_numpy().ravel()).tolist())
    counts = (
        np.stack([(wide == c).sum(axis=1).to_numpy() for c in categories], axis=1)
        if categories
        else np.zeros((0, 0))
    )
    return FleissResult(fleiss_kappa(counts), int(len(wide)), len(judges), categories)


def pairwise_cohen(per_judge: pd.DataFrame) -> pd.DataFrame:
    """Cohen's kappa for every unordered pair of judges, over the episodes both judged consistently.

    Columns judge_a, judge_b (judge ids, judge_a < judge_b), n_episodes, kappa (NaN when undefined).
    """
    consistent = per_judge[~per_judge["verdict_category"].isin([INCONSISTENT, ERROR])]
    wide = consistent.pivot(index="episode_id", columns="judge_id", values="verdict_category")
    rows = []
    for a, b in itertools.combinations(sorted(per_judge["judge_id"].unique()), 2):
        both = wide[[a, b]].dropna() if a in wide and b in wide else pd.DataFrame(columns=[a, b])
        rows.append(
            {"judge_a": a, "judge_b": b, "n_episodes": len(both), "kappa": cohen_kappa(both[a], both[b])}
        )
    out = pd.DataFrame(rows, columns=["judge_a", "judge_b", "n_episodes", "kappa"])
    return out.astype({"n_episodes": "int64", "kappa": float})


def kappa_matrix(pairs: pd.DataFrame, judges: Sequence[str]) -> pd.DataFrame:
    """Symmetric judge x judge matrix of Cohen's kappa (1 on the diagonal), indexed by short names."""
    names = [judge_name(j) for j in judges]
    matrix = pd.DataFrame(np.eye(len(judges)), index=names, columns=names)
    for row in pairs.itertuples(index=False):
        a, b = judge_name(row.judge_a), judge_name(row.judge_b)
        matrix.loc[a, b] = matrix.loc[b, a] = row.kappa
    return matrix


def kappa_heatmap_png(
    matrix: pd.DataFrame, title: str = "Cohen's kappa between judges\n(episodes both judged consistently)"
) -> bytes:
    """Render the kappa matrix as a PNG; no date or software version in the file, so bytes repeat."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = max(4.0, 0.9 * len(matrix) + 2.5)
    fig, ax = plt.subplots(figsize=(size, size * 0.85), dpi=100)
    try:
        if matrix.empty:
            ax.text(0.5, 0.5, "no judge verdicts", ha="center", va="center")
            ax.set_axis_off()
        else:
            image = ax.imshow(matrix.to_numpy(dtype=float), vmin=-1.0, vmax=1.0, cmap="RdBu")
            ax.set_xticks(range(len(matrix)), matrix.columns, rotation=45, ha="right")
            ax.set_yticks(range(len(matrix)), matrix.index)
            for i, j in itertools.product(range(len(matrix)), repeat=2):
                value = matrix.iat[i, j]
                dark = (
                    not pd.isna(value) and abs(value) > 0.6
                )  # white text on the dark ends of the colour map
                ax.text(
                    j,
                    i,
                    "n/a" if pd.isna(value) else f"{value:.2f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if dark else "black",
                )
            fig.colorbar(image, ax=ax, shrink=0.8)
        ax.set_title(title)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", metadata={"Software": None})
    finally:
        plt.close(fig)
    return buffer.getvalue()


def _empty(columns: list[str], dtypes: dict[str, str]) -> pd.DataFrame:
    """A zero-row frame whose columns are strings unless ``dtypes`` says otherwise."""
    return pd.DataFrame({c: pd.Series(dtype=dtypes.get(c, "str")) for c in columns})
