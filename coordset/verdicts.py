"""Pairwise verdicts judged in both orders, and the majority rule used for consensus.

A judge sees the pair as (A=model_a, B=model_b), then swapped. Its verdict is *consistent* when
both orders name the same model, or both say tie: ``(A, B)``, ``(B, A)`` or ``(tie, tie)``
(the second letter refers to the swapped order). Anything else is ``inconsistent``; an order
that could not be parsed (``error``) makes the verdict ``error``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

TIE = "tie"
UNKNOWN = "unknown"
INCONSISTENT = "inconsistent"
ERROR = "error"


def pair_verdict(winner_ab: str, winner_ba: str, model_a: str, model_b: str) -> str:
    """The model a judge prefers over both orders, ``tie``, ``inconsistent`` or ``error``."""
    if ERROR in (winner_ab, winner_ba):
        return ERROR
    if (winner_ab, winner_ba) == ("A", "B"):
        return model_a
    if (winner_ab, winner_ba) == ("B", "A"):
        return model_b
    if (winner_ab, winner_ba) == (TIE, TIE):
        return TIE
    return INCONSISTENT


def majority_verdict(verdicts: Iterable[str]) -> str:
    """Majority of the consistent verdicts (model names or ``tie``).

    Inconsistent and unparsed verdicts abstain. No consistent verdict gives ``unknown``; when two
    or more outcomes share the top count, the judges disagree evenly and the consensus is ``tie``.
    """
    counts = Counter(v for v in verdicts if v not in (INCONSISTENT, ERROR, UNKNOWN))
    if not counts:
        return UNKNOWN
    ranked = counts.most_common()
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return TIE
    return ranked[0][0]
