"""The low-rank recurrent coordinator: one latent state of dimension ``rank`` per turn.

It reads an episode's messages in order (user, agent 1, agent 2, user, … or a group chat's speakers), each as
its sentence embedding plus one-hot features of who spoke (user, tool or the agent's slot) and of the source,
and keeps a state h of width ``rank`` (``latent.cell``: ``gru``, or ``linear``: h_t = A h_{t-1} + B x_t + b).
Two linear read-outs use it:

- **reconstruction** of the current message, C h_t + c: rank-limited, so directly comparable with (and on its
  training data never better than) the PCA of the same rank;
- **next message** = f(x_t, speaker) + G(what history adds to h_t, speaker): f is a ridge regression from the
  current message embedding with an intercept per speaker slot, fitted per source on training groups (its
  penalty by grouped CV) -- exactly the learned memoryless baseline the model is scored against; G is a ridge
  map, per source, from what the history adds to the state (h_t minus the state the message would give from
  an empty history), its penalty chosen by grouped CV on training groups. With no memory (A = 0) that is zero
  and the model *is* the memoryless baseline; memory only enters where it pays on unseen groups.

Why this design (the previous GRU lost to every baseline on held-out groups, including copying the current
message: a width-8 state had to re-derive through an 8-dimensional bottleneck what the full current message
already says about the next one):

- **Memoryless part outside the state.** f uses the whole current embedding, so the state only has to carry
  history. On this data most of the next message is predictable from the current one and from who speaks;
  what history adds is small (a few percent of the squared error on Who&When, <1% elsewhere) but real.
- **PCA-anchored state, small-amplitude memory.** Reconstruction within a few percent of PCA leaves no whole
  dimension for memory (dropping the 8th principal component alone costs ~10% of the explained variance).
  The cell starts as the training PCA (B = principal axes, read back by C) plus a share ``latent.memory_init``
  of the previous state (A = 0.1 I; for the GRU, an update gate of 0.1): the state is the current message's
  PCA code plus a decaying trace of the earlier ones, which costs ~1-2% of PCA's explained variance, and G
  reads that trace at any amplitude because it separates it from the current message's part.
- **Closed-form read-outs, gradient-trained cell, early stopping in two passes.** After every epoch C and G
  are refitted in closed form on the training groups; the cell is trained by Adam on reconstruction +
  next-message loss. A validation pass fits f, the PCA initialisation and the cell on the training groups
  minus validation groups carved from them, and picks the number of epochs (0 = the initial cell) with the
  lowest validation loss; the model is then retrained the same way on all training groups for that many
  epochs. Fitting f and the PCA on the validation groups too (as at first) scored epoch 0 in sample and later
  epochs out of sample, so epoch 0 always won and the published cell stayed the untrained PCA filter.
  ``latent.learning_rate`` is 1e-4: the PCA-initialised input weights are ~1e-3, and Adam at 1e-3 rewrote
  them within one epoch (the training loss rose); at 1e-4 validation improves for 2-3 epochs.
- **What G reads is history only.** Its input is the state minus the state the current message would give
  with no history (for the linear cell exactly A h_{t-1}); reading "state minus the best linear function of
  the current message" instead would hand G per-speaker linear functions of the current message, a
  memoryless gain the ridge (one slope for all speakers) does not have. The GRU starts with input-independent
  gates and its candidate in tanh's linear range, i.e. as the linear cell's filter; once training makes the
  gates depend on the input, history-times-message interactions enter too.
- **Determinism**: one torch and one BLAS thread, deterministic kernels, fixed seeds, episodes batched by
  length in a fixed order (rather than every episode padded to the longest, ~130 messages), so ``dvc repro
  --force`` reproduces the bytes.

Evaluation (``coordset.latent.evaluation``): every group is held out once, by a model trained without it
(``latent.eval_folds`` folds per source; fold 0 is the published model's held-out split), and every figure in
``metrics/latent.json`` → ``by_source`` has a bootstrap interval over held-out groups.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from coordset.errors import CoordsetError, ParamError
from coordset.params import get, require_choice, require_float, require_int

CELLS = ("gru", "linear")
MAX_AGENTS = 8  # speaker slots: user, tool + up to eight agent slots (more agents share the last slot)
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
    validation_fraction: float = 0.15
    patience: int = 8
    reconstruction_weight: float = 1.0
    eval_folds: int = 5
    bootstrap: int = 2000
    memory_init: float = 0.1


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
        validation_fraction=require_float(params, "latent.validation_fraction", low=0.0, high=0.5),
        patience=require_int(params, "latent.patience", low=1, high=10_000),
        reconstruction_weight=require_float(params, "latent.reconstruction_weight", low=0.0, high=1000.0),
        eval_folds=require_int(params, "latent.eval_folds", low=1, high=20),
        bootstrap=require_int(params, "latent.bootstrap", low=100, high=100_000),
        memory_init=require_float(params, "latent.memory_init", low=0.01, high=0.9),
    )


def check_rank(settings: LatentSettings, embedding_dim: int) -> None:
    if settings.rank > embedding_dim:
        raise ParamError("rank", f"must not exceed the embedding size {embedding_dim}, got {settings.rank}")


def _permuted(values: Any, seed: int) -> np.ndarray:
    ordered = np.array(sorted(set(values)), dtype=object)
    return ordered[np.random.default_rng(seed).permutation(len(ordered))]


def split_groups(group_ids: pd.Series, fraction: float, seed: int, sources: pd.Series | None = None
                 ) -> dict[str, str]:
    """Assign whole groups (question, task, game, project) to ``train`` or ``heldout``: none is on both sides.

    With ``sources`` (aligned with ``group_ids``) the split is drawn per source, so every source with two
    or more groups has at least one group on each side (a global draw left all three LLM-Deliberation
    games in train). The assignment depends only on the set of (source, group) pairs and the seed.
    """
    if sources is None:
        sources = pd.Series("", index=group_ids.index)
    pairs = pd.DataFrame({"group": np.asarray(group_ids), "source": np.asarray(sources)}).drop_duplicates()
    clash = pairs["group"].duplicated(keep=False)
    if clash.any():
        raise CoordsetError(f"group_id {pairs['group'][clash].iloc[0]!r} appears in two sources")
    split: dict[str, str] = {}
    for source in sorted(set(pairs["source"])):
        groups = _permuted(pairs.loc[pairs["source"] == source, "group"], seed)
        if len(groups) == 1:
            split[groups[0]] = "train"
            continue
        n_heldout = min(len(groups) - 1, max(1, round(len(groups) * fraction)))
        split.update({g: ("heldout" if i < n_heldout else "train") for i, g in enumerate(groups)})
    return dict(sorted(split.items()))


def assign_folds(group_ids: pd.Series, sources: pd.Series, fraction: float, seed: int, folds: int
                 ) -> dict[str, int]:
    """Cross-fitting folds over groups: fold 0 is ``split_groups``' held-out side, folds 1..folds-1 share
    out each source's training groups (dealt in a seeded order), so every group is held out exactly once."""
    split = split_groups(group_ids, fraction, seed, sources)
    source_of = dict(zip(group_ids, sources, strict=True))
    out = {g: 0 for g, side in split.items() if side == "heldout"}
    train = [g for g, side in split.items() if side == "train"]
    for source in sorted({source_of[g] for g in train}):
        groups = _permuted([g for g in train if source_of[g] == source], seed + 1)
        for i, g in enumerate(groups):
            out[g] = 1 + i % (folds - 1) if folds > 1 else -1  # -1: never held out (no cross-fitting)
    return dict(sorted(out.items()))


def validation_groups(group_ids: Any, sources: Any, fraction: float, seed: int) -> set[str]:
    """The training groups set aside for early stopping: ``fraction`` of each source's, rounded (so a source
    with two training groups keeps both for training)."""
    pairs = pd.DataFrame({"group": np.asarray(group_ids), "source": np.asarray(sources)}).drop_duplicates()
    out: set[str] = set()
    for source in sorted(set(pairs["source"])):
        groups = _permuted(pairs.loc[pairs["source"] == source, "group"], seed + 2)
        n_val = min(len(groups) - 1, round(len(groups) * fraction))
        out |= set(groups[:max(n_val, 0)])
    return out


@dataclass
class Sequences:
    """Episodes as one flat table of messages (no padding): episode e's messages are rows
    ``offsets[e]:offsets[e + 1]`` of ``embeddings`` (N, D), ``slots`` (N,) and ``roles`` (N,)."""

    episode_ids: list[str]
    embeddings: np.ndarray   # (N, D) float32
    slots: np.ndarray        # (N,) int: 0 user, 1 tool, 2.. the agent's slot in the episode
    offsets: np.ndarray      # (E + 1,) int
    turn_ends: list[list[tuple[int, int]]]  # per episode: (turn, index of its last message in the episode)
    sources: np.ndarray | None = None   # (E,) str
    roles: np.ndarray | None = None     # (N,) str: user / agent / tool
    speakers: np.ndarray | None = None  # (N,) str

    def __post_init__(self) -> None:
        n_episodes = len(self.episode_ids)
        if self.sources is None:
            self.sources = np.array([""] * n_episodes, dtype=object)
        if self.roles is None:
            self.roles = np.array(["user", "tool", *["agent"] * MAX_AGENTS], dtype=object)[self.slots]
        if self.speakers is None:
            self.speakers = np.array([f"slot{s}" for s in self.slots], dtype=object)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def rows_of(self, episodes: np.ndarray) -> np.ndarray:
        """Message rows of the given episodes, in order."""
        if len(episodes) == 0:
            return np.zeros(0, int)
        return np.concatenate([np.arange(self.offsets[e], self.offsets[e + 1]) for e in episodes])

    def pairs_of(self, episodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(current row, next row) for every consecutive pair of messages in the given episodes."""
        rows = [np.arange(self.offsets[e], self.offsets[e + 1] - 1) for e in episodes]
        current = np.concatenate(rows) if rows else np.zeros(0, int)
        return current, current + 1

    def episode_of_row(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.episode_ids)), self.lengths)

    def position_of_row(self) -> np.ndarray:
        return np.arange(len(self.embeddings)) - np.repeat(self.offsets[:-1], self.lengths)

    @classmethod
    def from_padded(cls, episode_ids: list[str], embeddings: np.ndarray, slots: np.ndarray, mask: np.ndarray,
                    turn_ends: list[list[tuple[int, int]]], sources: Any = None) -> Sequences:
        """From padded (E, T, D) embeddings, (E, T) slots and an (E, T) mask of real steps (tests)."""
        lengths = mask.sum(axis=1).astype(int)
        return cls(list(episode_ids), embeddings[mask].astype(np.float32), slots[mask].astype(int),
                   np.concatenate([[0], np.cumsum(lengths)]).astype(int), turn_ends,
                   None if sources is None else np.asarray(sources, dtype=object))


def build_sequences(episodes: pd.DataFrame, messages: pd.DataFrame, embeddings: pd.DataFrame) -> Sequences:
    """Episodes sorted by id, each one's messages by position, every message with its embedding row."""
    index = pd.Series(np.arange(len(embeddings)), index=embeddings["text_sha256"].to_numpy())
    matrix = np.stack(embeddings["embedding"].to_numpy()).astype(np.float32)
    episodes = episodes.sort_values("episode_id")
    episode_ids = list(episodes["episode_id"])
    # Messages of episodes outside `episodes` would shift every offset below.
    msgs = messages[messages["episode_id"].isin(episode_ids)].sort_values(["episode_id", "position"])
    lengths = msgs.groupby("episode_id").size().reindex(episode_ids)
    if lengths.isna().any():
        missing = lengths.index[lengths.isna()][0]
        raise CoordsetError(f"messages: episode {missing!r} has no messages; re-run the normalize stage")
    lengths = lengths.to_numpy().astype(int)
    rows = index.reindex(msgs["text_sha256"].to_numpy()).to_numpy()
    if np.isnan(rows.astype(float)).any():
        missing = msgs["text_sha256"].to_numpy()[np.isnan(rows.astype(float))][0]
        raise CoordsetError(f"embeddings: no row for text_sha256 {missing}; re-run the embed stage")
    slot_of = {(e, a): i for e, agents in zip(episodes["episode_id"], episodes["agents"], strict=True)
               for i, a in enumerate(agents)}
    roles = msgs["role"].to_numpy().astype(object)
    speakers = msgs["speaker"].to_numpy().astype(object)
    eids = msgs["episode_id"].to_numpy()
    slots = np.array([0 if r == "user" else 1 if r == "tool" else 2 + min(slot_of[(e, s)], MAX_AGENTS - 1)
                      for e, s, r in zip(eids, speakers, roles, strict=True)], dtype=int)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(int)
    turns = msgs["turn"].to_numpy()
    turn_ends: list[list[tuple[int, int]]] = []
    for e in range(len(episode_ids)):
        block = turns[offsets[e]:offsets[e + 1]]
        turn_ends.append([(int(t), int(np.flatnonzero(block == t)[-1])) for t in np.unique(block)])
    return Sequences(episode_ids, matrix[rows.astype(int)], slots, offsets, turn_ends,
                     episodes["source"].to_numpy().astype(object), roles, speakers)
