"""The low-rank recurrent coordinator: one latent state of dimension ``rank`` per turn.

It reads an episode's messages in order (user, agent 1, agent 2, user, … or a group chat's speakers),
each as its sentence embedding plus a one-hot feature of who spoke (user, tool, or the agent's slot),
and from its state (a) reconstructs the current message's embedding and (b) predicts the next one, both
through linear read-outs.

Cell (``latent.cell``): ``gru``, a GRU whose hidden state has width ``rank``, or ``linear``, a
linear dynamical system h_t = A h_{t-1} + B x_t with A of size rank x rank. Why these rather than a
U·Vᵀ low-rank RNN: in both the state *is* the rank-dimensional latent (no projection needed to
read it), and the linear read-outs make the reconstruction directly comparable to a PCA of the
same rank, the obvious baseline it has to beat. The GRU's gating lets the state keep the
conversation's context while each new message is written in; the linear system is the simplest
model with memory and contains PCA (A = 0, B = Cᵀ = the principal axes) as a special case. On the
default MT-Bench data (64 training questions) the linear cell generalizes slightly better to
held-out questions at ranks 8-32; neither beats PCA's reconstruction (metrics/latent.json).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from coordset.errors import CoordsetError, ParamError
from coordset.params import get, require_choice, require_float, require_int

CELLS = ("gru", "linear")
MAX_AGENTS = 4  # role features: user, tool + up to four agent slots (more agents share the last slot)
ROLE_SLOTS = 2 + MAX_AGENTS
KNOWN_DIMS = {"sentence-transformers/all-MiniLM-L6-v2": 384}


@dataclass(frozen=True)
class LatentSettings:
    rank: int
    cell: str
    seed: int
    epochs: int
    learning_rate: float
    weight_decay: float
    batch_size: int
    holdout_fraction: float
    probe_folds: int


def latent_settings(params: dict[str, Any]) -> LatentSettings:
    """Read and check ``rank`` and the ``latent`` params before any work.

    The rank cannot exceed the known embedding size of ``embed.model``; ``check_rank`` repeats that
    against the embeddings actually read.
    """
    rank = get(params, "rank")
    if isinstance(rank, bool) or not isinstance(rank, int):
        raise ParamError("rank", f"must be an integer (the latent dimension), got {rank!r}")
    if rank < 1:
        raise ParamError("rank", f"must be >= 1, got {rank}")
    dim = KNOWN_DIMS.get(get(params, "embed.model"))
    if dim is not None and rank > dim:
        raise ParamError("rank", f"must not exceed the embedding size {dim}, got {rank}")
    return LatentSettings(
        rank=rank,
        cell=require_choice(params, "latent.cell", CELLS),
        seed=require_int(params, "latent.seed", low=0),
        epochs=require_int(params, "latent.epochs", low=1, high=10_000),
        learning_rate=require_float(params, "latent.learning_rate", low=1e-6, high=1.0),
        weight_decay=require_float(params, "latent.weight_decay", low=0.0, high=1.0),
        batch_size=require_int(params, "latent.batch_size", low=1),
        holdout_fraction=require_float(params, "latent.holdout_fraction", low=0.05, high=0.95),
        probe_folds=require_int(params, "latent.probe_folds", low=2, high=20),
    )


def check_rank(settings: LatentSettings, embedding_dim: int) -> None:
    if settings.rank > embedding_dim:
        raise ParamError("rank", f"must not exceed the embedding size {embedding_dim}, got {settings.rank}")


def split_groups(group_ids: pd.Series, fraction: float, seed: int) -> dict[str, str]:
    """Assign whole groups (question, task, game, project) to ``train`` or ``heldout``: none is on both sides."""
    questions = np.array(sorted(set(group_ids)))
    order = np.random.default_rng(seed).permutation(len(questions))
    n_heldout = min(len(questions) - 1, max(1, round(len(questions) * fraction)))
    heldout = set(questions[order[:n_heldout]])
    return {q: ("heldout" if q in heldout else "train") for q in questions}


@dataclass
class Sequences:
    """Episodes as padded tensors: inputs (E, T, D + roles), targets (E, T, D), mask (E, T)."""

    episode_ids: list[str]
    embeddings: np.ndarray   # (E, T, D) float32
    roles: np.ndarray        # (E, T, ROLE_SLOTS) float32
    mask: np.ndarray         # (E, T) bool
    turn_ends: list[list[tuple[int, int]]]  # per episode: (turn, index of its last message)


def build_sequences(episodes: pd.DataFrame, messages: pd.DataFrame, embeddings: pd.DataFrame) -> Sequences:
    index = pd.Series(np.arange(len(embeddings)), index=embeddings["text_sha256"].to_numpy())
    matrix = np.stack(embeddings["embedding"].to_numpy()).astype(np.float32)
    episode_ids = sorted(episodes["episode_id"])
    # Messages of episodes outside `episodes` would shift every offset below.
    msgs = messages[messages["episode_id"].isin(episode_ids)].sort_values(["episode_id", "position"])
    slot_of = {(e, a): i for e, agents in zip(episodes["episode_id"], episodes["agents"], strict=True)
               for i, a in enumerate(agents)}
    lengths = msgs.groupby("episode_id").size().reindex(episode_ids)
    if lengths.isna().any():
        missing = lengths.index[lengths.isna()][0]
        raise CoordsetError(f"messages: episode {missing!r} has no messages; re-run the normalize stage")
    lengths = lengths.to_numpy().astype(int)
    longest = int(lengths.max())
    dim = matrix.shape[1]
    emb = np.zeros((len(episode_ids), longest, dim), np.float32)
    roles = np.zeros((len(episode_ids), longest, ROLE_SLOTS), np.float32)
    mask = np.zeros((len(episode_ids), longest), bool)
    rows = index.reindex(msgs["text_sha256"].to_numpy()).to_numpy()
    if np.isnan(rows.astype(float)).any():
        missing = msgs["text_sha256"].to_numpy()[np.isnan(rows.astype(float))][0]
        raise CoordsetError(f"embeddings: no row for text_sha256 {missing}; re-run the embed stage")
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    turn_ends: list[list[tuple[int, int]]] = []
    for e, eid in enumerate(episode_ids):
        block = msgs.iloc[offsets[e]:offsets[e + 1]]
        n = len(block)
        emb[e, :n] = matrix[rows[offsets[e]:offsets[e + 1]].astype(int)]
        mask[e, :n] = True
        for t, (role, speaker) in enumerate(zip(block["role"], block["speaker"], strict=True)):
            slot = {"user": 0, "tool": 1}.get(role)
            roles[e, t, slot if slot is not None else 2 + min(slot_of[(eid, speaker)], MAX_AGENTS - 1)] = 1.0
        turns = block["turn"].to_numpy()
        turn_ends.append([(int(turn), int(np.flatnonzero(turns == turn)[-1])) for turn in np.unique(turns)])
    return Sequences(episode_ids, emb, roles, mask, turn_ends)
