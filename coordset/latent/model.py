"""The recurrent coordinator in torch, its deterministic training, and reading its states out."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from coordset.latent import LatentSettings, Sequences


class LinearDynamics(nn.Module):
    """h_t = A h_{t-1} + B x_t + b with h_0 = 0; A starts at zero: memoryless at first, it learns memory."""

    def __init__(self, input_dim: int, rank: int) -> None:
        super().__init__()
        self.write = nn.Linear(input_dim, rank)
        self.transition = nn.Linear(rank, rank, bias=False)
        nn.init.zeros_(self.transition.weight)

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        written = self.write(inputs)
        state = torch.zeros_like(written[:, 0])
        states = []
        for t in range(inputs.shape[1]):  # episodes are a handful of messages: a Python loop is cheap
            state = written[:, t] + self.transition(state)
            states.append(state)
        return torch.stack(states, dim=1), state


class Coordinator(nn.Module):
    """A state of width ``rank`` (GRU or linear); linear read-outs for the current and the next message."""

    def __init__(self, embedding_dim: int, role_dim: int, rank: int, cell: str = "gru") -> None:
        super().__init__()
        if cell == "gru":
            self.cell: nn.Module = nn.GRU(embedding_dim + role_dim, rank, batch_first=True)
        elif cell == "linear":
            self.cell = LinearDynamics(embedding_dim + role_dim, rank)
        else:
            raise ValueError(f"unknown cell {cell!r}")  # latent_settings has already refused it
        self.reconstruct = nn.Linear(rank, embedding_dim)
        self.predict_next = nn.Linear(rank, embedding_dim)
        # Unit-norm embeddings have per-dimension spread ~1/sqrt(D); the model works on standardized
        # coordinates (train mean and spread, saved with the weights) so its losses are O(1).
        self.register_buffer("center", torch.zeros(embedding_dim))
        self.register_buffer("spread", torch.ones(1))

    def standardize_on(self, train_embeddings: torch.Tensor) -> None:
        self.center.copy_(train_embeddings.mean(dim=0))
        self.spread.fill_(float((train_embeddings - self.center).std()))

    def forward(self, embeddings: torch.Tensor, roles: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """States, reconstructions and next-message predictions, the latter two in embedding space."""
        z = (embeddings - self.center) / self.spread
        states, _ = self.cell(torch.cat([z, roles], dim=-1))
        recon = self.reconstruct(states) * self.spread + self.center
        nxt = self.predict_next(states) * self.spread + self.center
        return states, recon, nxt


@contextlib.contextmanager
def deterministic_torch(seed: int) -> Iterator[None]:
    """Same seed, one thread, deterministic kernels, so `dvc repro --force` gives the same bytes.

    The previous thread count and determinism flag come back on exit, so callers (tests, notebooks)
    are not left single-threaded.
    """
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def losses(model: Coordinator, emb: torch.Tensor, roles: torch.Tensor, mask: torch.Tensor
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """MSE per standardized element: reconstruction over real steps, next-step over real pairs."""
    _, recon, nxt = model(emb, roles)
    m = mask.unsqueeze(-1).float()
    recon_mse = ((((recon - emb) / model.spread) ** 2) * m).sum() / (m.sum() * emb.shape[-1])
    pair = (mask[:, 1:] & mask[:, :-1]).unsqueeze(-1).float()
    next_mse = ((((nxt[:, :-1] - emb[:, 1:]) / model.spread) ** 2) * pair).sum() / (
        pair.sum().clamp(min=1) * emb.shape[-1])
    return recon_mse, next_mse


@dataclass
class Fit:
    model: Coordinator
    history: list[dict[str, float]] = field(default_factory=list)


def _tensors(seq: Sequences, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (torch.from_numpy(seq.embeddings[rows]), torch.from_numpy(seq.roles[rows]),
            torch.from_numpy(seq.mask[rows]))


def train(seq: Sequences, train_rows: np.ndarray, heldout_rows: np.ndarray, settings: LatentSettings,
          progress: bool = True) -> Fit:
    with deterministic_torch(settings.seed):
        return _train(seq, train_rows, heldout_rows, settings, progress)


def _train(seq: Sequences, train_rows: np.ndarray, heldout_rows: np.ndarray, settings: LatentSettings,
           progress: bool) -> Fit:
    model = Coordinator(seq.embeddings.shape[-1], seq.roles.shape[-1], settings.rank, settings.cell)
    model.standardize_on(torch.from_numpy(seq.embeddings[train_rows][seq.mask[train_rows]]))
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate,
                                 weight_decay=settings.weight_decay)
    generator = np.random.default_rng(settings.seed)
    held = _tensors(seq, heldout_rows)
    fit = Fit(model)
    epochs = range(1, settings.epochs + 1)
    if progress:
        from tqdm import tqdm

        epochs = tqdm(epochs, desc="latent: train", unit="epoch")
    for epoch in epochs:
        model.train()
        order = train_rows[generator.permutation(len(train_rows))]
        total, batches = 0.0, 0
        for start in range(0, len(order), settings.batch_size):
            emb, roles, mask = _tensors(seq, np.sort(order[start:start + settings.batch_size]))
            recon, nxt = losses(model, emb, roles, mask)
            loss = recon + nxt
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            batches += 1
        model.eval()
        with torch.no_grad():
            h_recon, h_next = losses(model, *held)
        fit.history.append({"epoch": epoch, "train_loss": round(total / batches, 6),
                            "heldout_loss": round(float(h_recon + h_next), 6)})
    return fit


def predict(model: Coordinator, seq: Sequences, rows: np.ndarray | None = None, *, readouts: bool = True,
            chunk: int = 4096) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """States (E, T, rank) and, with ``readouts``, reconstructions and next-message predictions (E, T, D).

    ``rows`` picks episodes (default: all). Episodes are run ``chunk`` at a time so memory stays flat on
    the large sets; each episode's result does not depend on which others share its chunk.
    """
    rows = np.arange(len(seq.episode_ids)) if rows is None else rows
    states, recons, nexts = [], [], []
    model.eval()
    with deterministic_torch(0), torch.no_grad():  # the seed is unused here: inference draws nothing
        for start in range(0, len(rows), chunk):
            part = rows[start:start + chunk]
            s, r, n = model(torch.from_numpy(seq.embeddings[part]), torch.from_numpy(seq.roles[part]))
            states.append(s.numpy())
            if readouts:
                recons.append(r.numpy())
                nexts.append(n.numpy())
    if not readouts:
        return np.concatenate(states), None, None
    return np.concatenate(states), np.concatenate(recons), np.concatenate(nexts)
