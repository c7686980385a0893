"""Imported judges: Table 5 reproduction, per-episode verdicts, consensus rules, Fleiss and Cohen kappas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from coordset.errors import CoordsetError
from coordset.labels.agreement import as_categories, compare_outcomes
from coordset.labels.judges import (
    cohen_kappa,
    episode_consensus,
    episode_verdicts,
    fleiss_kappa,
    inconsistency_table,
    judge_consistency,
    judges_fleiss,
    kappa_heatmap_png,
    kappa_matrix,
    pairwise_cohen,
)
from coordset.records import SkipLog
from coordset.sources import mtbench_files as mtb
from schemas import check
from schemas.labels import JUDGE_CONSISTENCY, JUDGE_EPISODE_VERDICTS
from tests.helpers import MIRROR

REPRO = MIRROR / "mt_bench_repro"
TABLE5 = REPRO / "table5_pairwise_inconsistency_en.csv"


def _episodes(*rows: tuple[str, list[str], str, str]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"episode_id": eid, "agent_models": models, "winner": winner, "winner_source": source}
            for eid, models, winner, source in rows
        ]
    )


def _verdicts(rows: list[tuple[str, str, str, str, str, str]], turn: int = 2) -> pd.DataFrame:
    """(episode_id, judge_id, model_a, model_b, winner_ab, winner_ba) -> judge_verdicts rows."""
    return pd.DataFrame(
        [
            {
                "episode_id": e,
                "judge_id": j,
                "question_id": "1",
                "model_a": a,
                "model_b": b,
                "winner_ab": ab,
                "winner_ba": ba,
                "winner": "",
                "turn": turn,
                "tstamp": None,
            }
            for e, j, a, b, ab, ba in rows
        ]
    )


# Orders (AB, BA) giving each verdict when model_a = "x", model_b = "y".
X, Y, TIE, INC, ERR = ("A", "B"), ("B", "A"), ("tie", "tie"), ("A", "A"), ("error", "B")


def _judged(eid: str, *orders: tuple[str, str], a: str = "x", b: str = "y") -> list[tuple]:
    return [(eid, f"j{i}", a, b, ab, ba) for i, (ab, ba) in enumerate(orders)]


# --------------------------------------------------------------------------------------------------------
# Table 5 of the mt_bench_repro paper, from the real mirrored judge files.


@pytest.mark.skipif(
    not TABLE5.is_file(), reason=f"set COORDSET_MIRROR to the shared mirror: {TABLE5} not found"
)
def test_consistency_reproduces_table5_of_the_paper() -> None:
    base = REPRO / "data" / "en"
    skips = SkipLog(policy="stop")
    questions = mtb.read_questions(base / "questions.jsonl", skips, "mt_bench_repro")
    models = sorted(p.stem for p in (base / "answers").glob("*.jsonl"))
    ids = {
        mtb.episode_id("mt_bench_repro", "en", q, list(p)) for q in questions for p in mtb.all_pairs(models)
    }
    files = sorted((base / "judgments").glob("*/*/pairwise/*.jsonl"))
    verdicts = pd.DataFrame(mtb.read_pairwise_verdicts(files, skips, "mt_bench_repro", "en", ids))

    consistency = judge_consistency(verdicts)
    check(consistency, JUDGE_CONSISTENCY, "judge_consistency")
    ours = inconsistency_table(consistency).set_index("judge").sort_index()
    paper = pd.read_csv(TABLE5).set_index("judge").sort_index()
    assert list(ours.index) == list(paper.index)  # every judge id mapped to the paper's name
    judges = paper.index != "Mean"
    for column in ("en_inconsistent", "en_valid"):
        assert ours.loc[judges, column].astype(int).tolist() == paper.loc[judges, column].astype(int).tolist()
    assert ours["en_rate_pct"].tolist() == paper["en_rate_pct"].tolist()


def test_consistency_counts_errors_as_invalid_and_disagreeing_orders_as_inconsistent() -> None:
    verdicts = _verdicts(
        [
            ("e1", "j", "x", "y", "A", "B"),
            ("e2", "j", "x", "y", "B", "A"),
            ("e3", "j", "x", "y", "tie", "tie"),
            ("e4", "j", "x", "y", "A", "A"),
            ("e5", "j", "x", "y", "tie", "B"),
            ("e6", "j", "x", "y", "error", "B"),
            ("e7", "j", "x", "y", "A", "error"),
            ("e1", "k", "x", "y", "B", "B"),
        ]
    )
    table = judge_consistency(verdicts).set_index("judge_id")
    assert table.loc["j", ["n_verdicts", "n_valid", "n_error", "n_inconsistent"]].tolist() == [7, 5, 2, 2]
    assert table.loc["j", "inconsistency_rate"] == pytest.approx(2 / 5)
    assert table.loc["k", "inconsistency_rate"] == 1.0


# --------------------------------------------------------------------------------------------------------
# Per-episode verdicts and consensus.


def test_verdicts_match_the_unordered_pair_and_use_the_episode_agent_order() -> None:
    episodes = _episodes(("e1", ["x", "y"], "unknown", "judge_majority"))
    # The judge file lists the pair as (y, x): A in order AB means y, which is agent_2.
    verdicts = _verdicts(
        [("e1", "j1", "y", "x", "A", "B"), ("e1", "j2", "y", "x", "B", "A"), ("e1", "j3", "y", "x", "A", "A")]
    )
    per_judge = episode_verdicts(verdicts, episodes)
    check(per_judge, JUDGE_EPISODE_VERDICTS, "judge_episode_verdicts")
    assert per_judge["verdict"].tolist() == ["y", "x", "inconsistent"]
    assert per_judge["verdict_category"].tolist() == ["agent_2", "agent_1", "inconsistent"]


def test_the_last_judged_turn_is_the_episode_verdict() -> None:
    episodes = _episodes(("e1", ["x", "y"], "unknown", "judge_majority"))
    verdicts = pd.concat(
        [
            _verdicts([("e1", "j", "x", "y", "B", "A")], turn=2),
            _verdicts([("e1", "j", "x", "y", "A", "B")], turn=1),
        ]
    )
    assert episode_verdicts(verdicts, episodes)["verdict"].tolist() == ["y"]


def test_a_verdict_on_another_pair_or_episode_is_refused() -> None:
    episodes = _episodes(("e1", ["x", "y"], "unknown", "judge_majority"))
    with pytest.raises(CoordsetError, match="compared \\(x, z\\)"):
        episode_verdicts(_verdicts([("e1", "j", "x", "z", "A", "B")]), episodes)
    with pytest.raises(CoordsetError, match="not in episodes"):
        episode_verdicts(_verdicts([("e9", "j", "x", "y", "A", "B")]), episodes)


@pytest.mark.parametrize(
    ("orders", "expected"),
    [
        ((X, X, X, Y, Y, INC), "x"),  # plurality of consistent verdicts wins
        ((X, X, Y, Y, INC, ERR), "tie"),  # top two share the count
        ((X, Y, TIE), "tie"),  # three-way split
        ((TIE, TIE, X), "tie"),  # tie is a verdict like any other and can win
        ((Y, INC, INC, INC, INC, INC), "y"),  # one consistent judge decides
        ((INC, ERR, INC), "unknown"),  # no consistent verdict
    ],
)
def test_consensus_rules(orders: tuple, expected: str) -> None:
    verdicts = _verdicts(_judged("e1", *orders))
    # The one majority rule, applied by normalize to make the episode's outcome.
    assert mtb.judge_majority(verdicts.to_dict("records")) == {"e1": expected}
    episodes = _episodes(("e1", ["x", "y"], "unknown", "judge_majority"))
    per_judge = episode_verdicts(verdicts, episodes)
    outcomes = pd.DataFrame([{"episode_id": "e1", "outcome": expected, "outcome_source": "judge_majority"}])
    row = episode_consensus(per_judge, outcomes).iloc[0]
    assert row["consensus"] == expected and row["consensus_source"] == "judge_majority"
    assert row["n_judges"] == len(orders)
    assert row["n_consistent_judges"] == sum(o in (X, Y, TIE) for o in orders)


def test_unjudged_episodes_keep_their_source_outcome() -> None:
    episodes = _episodes(
        ("arena/1", ["x", "y"], "y", "human_vote"),
        ("arena/2", ["x", "y"], "tie", "human_vote"),
        ("fastchat/1", ["x", "y"], "unknown", "none"),
    )
    outcomes = episodes.rename(columns={"winner": "outcome", "winner_source": "outcome_source"})
    per_judge = episode_verdicts(_verdicts([]), episodes)
    out = episode_consensus(per_judge, outcomes).set_index("episode_id")
    assert out["consensus"].to_dict() == {"arena/1": "y", "arena/2": "tie", "fastchat/1": "unknown"}
    assert out["consensus_source"].to_dict() == {"arena/1": "human_vote", "arena/2": "human_vote",
                                                 "fastchat/1": "none"}
    assert out["n_judges"].eq(0).all()


# --------------------------------------------------------------------------------------------------------
# Kappas.

# Fleiss (1971) as worked on Wikipedia's "Fleiss' kappa" page: 10 subjects, 14 raters, 5 categories.
FLEISS_EXAMPLE = np.array(
    [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
)


def test_fleiss_kappa_textbook_value() -> None:
    assert round(fleiss_kappa(FLEISS_EXAMPLE), 3) == 0.210
    assert fleiss_kappa(np.array([[3, 0], [0, 3], [3, 0]])) == pytest.approx(1.0)
    assert np.isnan(fleiss_kappa(np.array([[3, 0], [3, 0]])))  # one category only: undefined
    with pytest.raises(ValueError):
        fleiss_kappa(np.array([[3, 0], [1, 1]]))


def test_cohen_kappa_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    labels = np.array(["agent_1", "agent_2", "tie"])
    for _ in range(20):
        a = labels[rng.integers(0, 3, size=50)]
        b = np.where(rng.random(50) < 0.6, a, labels[rng.integers(0, 3, size=50)])
        assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)
    assert cohen_kappa(["x", "y", "x"], ["x", "y", "x"]) == pytest.approx(1.0)
    assert np.isnan(cohen_kappa(["x", "x"], ["x", "x"]))
    assert np.isnan(cohen_kappa([], []))


def test_fleiss_over_judges_uses_episodes_every_judge_judged_consistently() -> None:
    episodes = _episodes(*[(f"e{i}", ["x", "y"], "unknown", "judge_majority") for i in range(4)])
    rows = (
        _judged("e0", X, X, X)
        + _judged("e1", Y, Y, X)
        + _judged("e2", TIE, TIE, TIE)
        + _judged("e3", X, INC, X)
    )
    per_judge = episode_verdicts(_verdicts(rows), episodes)
    result = judges_fleiss(per_judge)
    assert (result.n_episodes, result.n_judges, result.categories) == (3, 3, ["agent_1", "agent_2", "tie"])
    counts = np.array([[3, 0, 0], [1, 2, 0], [0, 0, 3]])
    assert result.kappa == pytest.approx(fleiss_kappa(counts))

    pairs = pairwise_cohen(per_judge).set_index(["judge_a", "judge_b"])
    assert pairs["n_episodes"].to_dict() == {("j0", "j1"): 3, ("j0", "j2"): 4, ("j1", "j2"): 3}
    assert pairs.loc[("j0", "j1"), "kappa"] == pytest.approx(1.0)
    assert pairs.loc[("j0", "j2"), "kappa"] == pytest.approx(
        cohen_kappa_score(["agent_1", "agent_2", "tie", "agent_1"], ["agent_1", "agent_1", "tie", "agent_1"])
    )

    matrix = kappa_matrix(pairwise_cohen(per_judge), ["j0", "j1", "j2"])
    assert np.allclose(matrix.to_numpy(), matrix.to_numpy().T) and np.allclose(np.diag(matrix), 1.0)
    png = kappa_heatmap_png(matrix)
    assert png.startswith(b"\x89PNG") and png == kappa_heatmap_png(matrix)  # same bytes every time
    assert b"Software" not in png and b"matplotlib" not in png


# --------------------------------------------------------------------------------------------------------
# Labels vs consensus.


def test_outcomes_are_compared_on_known_episodes_and_accuracy_also_without_ties() -> None:
    actual = pd.Series(["agent_1", "agent_2", "tie", "agent_1", "unknown"])
    predicted = pd.Series(["agent_1", "agent_1", "tie", "unknown", "agent_2"])
    result = compare_outcomes(actual, predicted)
    assert (result["n"], result["n_non_tie"]) == (3, 2)
    assert result["accuracy"] == pytest.approx(2 / 3) and result["accuracy_non_tie"] == pytest.approx(1 / 2)
    assert result["kappa"] == pytest.approx(cohen_kappa_score(actual[:3], predicted[:3]))
    empty = compare_outcomes(pd.Series(["unknown"]), pd.Series(["tie"]))
    assert empty["kappa"] is None and empty["accuracy"] is None



def test_llm_pairwise_quality_counts_inconsistency_as_for_the_imported_judges() -> None:
    from coordset.labels.llm_consensus import quality

    view = pd.DataFrame({"kind": "pairwise", "status": ["valid", "valid", "invalid", "valid"],
                         "preferred": ["y", "inconsistent", None, "tie"]})
    assert quality(view) == {"pairwise": {"n_labeled": 4, "n_valid": 3, "coverage": 0.75, "n_inconsistent": 1,
                                          "inconsistency_rate": round(1 / 3, 6)}}
    agents = pd.Series([["x", "y"]] * 3)
    assert as_categories(pd.Series(["y", "unknown", "tie"]), agents).tolist() == ["agent_2", "unknown", "tie"]
