"""The recurrent coordinator in torch, its deterministic training with early stopping, and reading it out.

See ``coordset/latent/__init__.py`` for the design. Everything here works on standardized embeddings
(train mean and one overall spread, saved with the weights) so the losses are O(1).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from coordset.latent import ROLE_SLOTS, LatentSettings, Sequences
from coordset.latent.baselines import RidgeNext

# L2 (``latent.weight_decay``) on the recurrent weights (the read-outs are refitted in closed form, with their
# own ridge penalties). The PCA-initialised write weights are not pulled towards zero.
DECAYED = ("cell.weight_hh_l0", "cell.transition.weight")


class LinearDynamics(nn.Module):
    """h_t = A h_{t-1} + B x_t + b with h_0 = 0 (``Coordinator.init_from_pca`` sets A = memory_init * I)."""

    def __init__(self, input_dim: int, rank: int) -> None:
        super().__init__()
        self.write = nn.Linear(input_dim, rank)
        self.transition = nn.Linear(rank, rank, bias=False)
        nn.init.zeros_(self.transition.weight)

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        written = self.write(inputs)
        state = torch.zeros_like(written[:, 0])
        states = []
        for t in range(inputs.shape[1]):
            state = written[:, t] + self.transition(state)
            states.append(state)
        return torch.stack(states, dim=1), state


class Coordinator(nn.Module):
    """State of width ``rank``; reconstruction = C h + c; next = f(x, speaker) + G(h - fresh(x), speaker, source).

    f, the memoryless ridge prediction, is computed outside (``RidgeNext``) and passed in, standardized;
    fresh(x) is the state the message would give with no history. C and G are set in closed form by
    ``refit_readouts``.
    """

    def __init__(self, embedding_dim: int, n_slots: int, n_sources: int, rank: int, cell: str = "gru") -> None:
        super().__init__()
        input_dim = embedding_dim + n_slots + n_sources
        if cell == "gru":
            self.cell: nn.Module = nn.GRU(input_dim, rank, batch_first=True)
        elif cell == "linear":
            self.cell = LinearDynamics(input_dim, rank)
        else:
            raise ValueError(f"unknown cell {cell!r}")  # latent_settings has already refused it
        self.rank, self.n_slots, self.n_sources, self.kind = rank, n_slots, n_sources, cell
        self.reconstruct = nn.Linear(rank, embedding_dim)
        self.memory = nn.Linear(rank * (1 + n_slots) * n_sources, embedding_dim, bias=False)
        nn.init.zeros_(self.memory.weight)
        self.register_buffer("center", torch.zeros(embedding_dim))
        self.register_buffer("spread", torch.ones(1))

    def init_from_pca(self, train_z: np.ndarray, memory: float) -> None:
        """Start as the PCA of the training messages (write the principal axes, read them back) with a little
        memory: a share ``memory`` of the previous state is kept (linear: A = memory * I; GRU: update gate)."""
        mean = train_z.mean(axis=0)
        _, sing, vt = np.linalg.svd(train_z - mean, full_matrices=False)
        k = min(self.rank, len(sing))
        axes = np.zeros((self.rank, train_z.shape[1]))
        axes[:k] = vt[:k]
        scale = np.ones(self.rank)
        scale[:k] = np.maximum(sing[:k] / np.sqrt(max(len(train_z) - 1, 1)), 1e-6)
        dim = train_z.shape[1]
        with torch.no_grad():
            if self.kind == "gru":
                # Candidate n = tanh(axes z / (10 sd)): the codes in tanh's linear range (outlying sources
                # included); gates start independent of the input, the update gate at ``memory``: h_t =
                # (1 - memory) n_t + memory h_{t-1}, the linear cell's filter, which training may then gate.
                gain = 10.0 * scale
                w = torch.zeros_like(self.cell.weight_ih_l0)
                w[2 * self.rank:, :dim] = torch.from_numpy(axes / gain[:, None]).float()
                self.cell.weight_ih_l0.copy_(w)
                self.cell.weight_hh_l0.zero_()
                b_ih = torch.zeros_like(self.cell.bias_ih_l0)
                b_ih[2 * self.rank:] = torch.from_numpy(-(axes @ mean) / gain).float()
                b_ih[self.rank:2 * self.rank] = float(np.log(memory / (1 - memory)))  # update gate z = memory
                self.cell.bias_ih_l0.copy_(b_ih)
                self.cell.bias_hh_l0.zero_()
            else:
                gain = scale
                w = torch.zeros_like(self.cell.write.weight)
                w[:, :dim] = torch.from_numpy(axes / gain[:, None]).float()
                self.cell.write.weight.copy_(w)
                self.cell.transition.weight.copy_(torch.eye(self.rank) * memory)
                self.cell.write.bias.copy_(torch.from_numpy(-(axes @ mean) / gain).float())
            self.reconstruct.weight.copy_(torch.from_numpy((axes * gain[:, None]).T).float())
            self.reconstruct.bias.copy_(torch.from_numpy(mean).float())

    def _inputs(self, z: torch.Tensor, slots: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        slot_1h = nn.functional.one_hot(slots, self.n_slots).float()
        src_1h = nn.functional.one_hot(source, self.n_sources).float()[:, None, :].expand(-1, z.shape[1], -1)
        return torch.cat([z, slot_1h, src_1h], dim=-1)

    def states(self, z: torch.Tensor, slots: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        out, _ = self.cell(self._inputs(z, slots, source))
        return out

    def fresh_states(self, z: torch.Tensor, slots: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """The state each message would produce with no history (previous state zero): its memoryless part."""
        u = self._inputs(z, slots, source)
        if self.kind == "linear":
            return self.cell.write(u)
        gru, r = self.cell, self.rank
        gates = u @ gru.weight_ih_l0.T + gru.bias_ih_l0
        reset = torch.sigmoid(gates[..., :r] + gru.bias_hh_l0[:r])
        update = torch.sigmoid(gates[..., r:2 * r] + gru.bias_hh_l0[r:2 * r])
        candidate = torch.tanh(gates[..., 2 * r:] + reset * gru.bias_hh_l0[2 * r:])
        return (1 - update) * candidate

    def memory_features(self, states: torch.Tensor, z: torch.Tensor, slots: torch.Tensor, source: torch.Tensor
                        ) -> torch.Tensor:
        """What the history adds to the state (state - the state the message alone would give; for the linear
        cell exactly A h_{t-1}) and that per speaker slot, in the block of the episode's source (each source has
        its own memory read-out). Zero history, zero features: no memoryless signal gets in."""
        held = states - self.fresh_states(z, slots, source)
        slot_1h = nn.functional.one_hot(slots, self.n_slots).float()
        feats = torch.cat([held, (held.unsqueeze(-1) * slot_1h.unsqueeze(-2)).flatten(-2)], dim=-1)
        src_1h = nn.functional.one_hot(source, self.n_sources).float()[:, None, :, None]
        return (src_1h * feats.unsqueeze(-2)).flatten(-2)

    def readouts(self, states: torch.Tensor, z: torch.Tensor, slots: torch.Tensor, source: torch.Tensor,
                 base_next: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction and next-message prediction, standardized."""
        return self.reconstruct(states), base_next + self.memory(self.memory_features(states, z, slots, source))


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


@dataclass
class Batch:
    episodes: np.ndarray
    z: torch.Tensor          # (B, T, D) standardized
    slots: torch.Tensor      # (B, T) long
    source: torch.Tensor     # (B,) long
    base_next: torch.Tensor  # (B, T, D) standardized ridge prediction of message t+1 from message t
    mask: torch.Tensor       # (B, T) bool


class Data:
    """Sequences standardized once, with the ridge predictions, cut into padded batches of similar length."""

    def __init__(self, seq: Sequences, model: Coordinator, ridge: RidgeNext, source_index: dict[str, int]) -> None:
        self.seq = seq
        center, spread = model.center.numpy(), float(model.spread)
        self.z = ((seq.embeddings - center) / spread).astype(np.float32)
        self.base = ((ridge.predict(seq) - center) / spread).astype(np.float32)
        self.source = np.array([source_index.get(s, 0) for s in seq.sources], dtype=np.int64)

    def batch(self, episodes: np.ndarray) -> Batch:
        seq = self.seq
        lengths = seq.lengths[episodes]
        longest = int(lengths.max())
        z = np.zeros((len(episodes), longest, seq.dim), np.float32)
        base = np.zeros_like(z)
        slots = np.zeros((len(episodes), longest), np.int64)
        mask = np.zeros((len(episodes), longest), bool)
        for i, e in enumerate(episodes):
            a, b = seq.offsets[e], seq.offsets[e + 1]
            z[i, :b - a], base[i, :b - a], slots[i, :b - a] = self.z[a:b], self.base[a:b], seq.slots[a:b]
            mask[i, :b - a] = True
        return Batch(episodes, torch.from_numpy(z), torch.from_numpy(slots), torch.from_numpy(self.source[episodes]),
                     torch.from_numpy(base), torch.from_numpy(mask))

    def batches(self, episodes: np.ndarray, size: int, rng: np.random.Generator | None = None) -> list[Batch]:
        """Episodes sorted by length (ties in a seeded order) and cut into batches of ``size``; with ``rng``
        the batches come in a shuffled order, and which episodes share a batch changes from call to call."""
        episodes = np.asarray(episodes)
        jitter = rng.permutation(len(episodes)) if rng is not None else np.arange(len(episodes))
        order = episodes[np.lexsort((jitter, self.seq.lengths[episodes]))]
        chunks = [order[i:i + size] for i in range(0, len(order), size)]
        if rng is not None:
            chunks = [chunks[i] for i in rng.permutation(len(chunks))]
        return [self.batch(c) for c in chunks]


def batch_losses(model: Coordinator, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Summed squared errors (standardized) and counts: reconstruction over real steps, next over real pairs."""
    states = model.states(batch.z, batch.slots, batch.source)
    recon, nxt = model.readouts(states, batch.z, batch.slots, batch.source, batch.base_next)
    m = batch.mask.unsqueeze(-1).float()
    recon_sse = (((recon - batch.z) ** 2) * m).sum()
    pair = (batch.mask[:, 1:] & batch.mask[:, :-1]).unsqueeze(-1).float()
    next_sse = (((nxt[:, :-1] - batch.z[:, 1:]) ** 2) * pair).sum()
    dim = batch.z.shape[-1]
    return recon_sse, m.sum() * dim, next_sse, pair.sum() * dim


@dataclass
class Fit:
    model: Coordinator
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    alphas: dict[int, float] = field(default_factory=dict)


def _scaled_loss(model: Coordinator, batches: list[Batch], weight: float, next_scale: float
                 ) -> tuple[float, float, float]:
    """(total, reconstruction, next) loss over ``batches``, per element, without gradients."""
    sums = np.zeros(4)
    with torch.no_grad():
        for b in batches:
            sums += np.array([float(v) for v in batch_losses(model, b)])
    recon, nxt = sums[0] / max(sums[1], 1), sums[2] / max(sums[3], 1) / next_scale
    return weight * recon + nxt, recon, nxt


def train(data: Data, model: Coordinator, train_eps: np.ndarray, val_eps: np.ndarray, settings: LatentSettings,
          groups: np.ndarray, progress: bool = True, desc: str = "latent: train", epochs: int | None = None) -> Fit:
    """Train on ``train_eps`` for at most ``epochs`` (default ``settings.epochs``) epochs, choosing the epoch by
    the loss on ``val_eps`` (epoch 0, the initial model, counts); without ``val_eps``, the last epoch is kept.

    After every epoch the read-outs are refitted in closed form on ``train_eps`` (``refit_readouts``, the memory
    penalty chosen once, by grouped CV, at epoch 0), so the validation loss is that of the model as it is used.
    The validation loss is out of sample only if ``data`` (its ridge) and ``model`` (its PCA initialisation)
    were fitted without ``val_eps``: ``coordset.latent.evaluation.fit_fold`` does that.
    """
    with deterministic_torch(settings.seed):
        return _train(data, model, train_eps, val_eps, settings, groups, progress, desc,
                      settings.epochs if epochs is None else epochs)


def next_loss_scale(data: Data, episodes: np.ndarray) -> float:
    """The ridge's mean squared error (standardized) on the consecutive pairs of ``episodes``: the unit of the
    next-step loss, so 1 = no gain over the ridge."""
    current, nxt = data.seq.pairs_of(episodes)
    scale = float(np.mean((data.base[current] - data.z[nxt]) ** 2)) if len(current) else 1.0
    # The ridge can predict every training pair exactly (e.g. every episode the same messages): an error of 0
    # has no gain to measure against, and dividing by it made the loss NaN (then "SVD did not converge" in the
    # read-outs). 1 keeps the next-step loss in plain standardized units there.
    return scale if np.isfinite(scale) and scale > 1e-12 else 1.0


def _train(data: Data, model: Coordinator, train_eps: np.ndarray, val_eps: np.ndarray, settings: LatentSettings,
           groups: np.ndarray, progress: bool, desc: str, n_epochs: int) -> Fit:
    weight = settings.reconstruction_weight
    next_scale = next_loss_scale(data, train_eps)
    # Only the cell learns by gradient; its read-outs are refitted in closed form after every epoch.
    optimizer = torch.optim.Adam(model.cell.parameters(), lr=settings.learning_rate)
    generator = np.random.default_rng(settings.seed)
    val_batches = data.batches(val_eps, 256) if len(val_eps) else []
    fit = Fit(model)
    alphas = refit_readouts(model, data, train_eps, groups)
    best_loss, best_state, waited = np.inf, copy.deepcopy(model.state_dict()), 0
    if val_batches:  # epoch 0: the initial model (PCA codes as the state; read-outs fitted to them)
        best_loss, val_recon, val_next = _scaled_loss(model, val_batches, weight, next_scale)
        fit.history.append({"epoch": 0, "train_loss": None, "validation_loss": round(best_loss, 6),
                            "validation_reconstruction": round(val_recon, 6), "validation_next": round(val_next, 6)})
    epochs = range(1, n_epochs + 1)
    if progress and n_epochs:
        from tqdm import tqdm

        epochs = tqdm(epochs, desc=desc, unit="epoch")
    for epoch in epochs:
        model.train()
        total = count = 0.0
        for b in data.batches(train_eps, settings.batch_size, generator):
            r_sse, r_n, n_sse, n_n = batch_losses(model, b)
            loss = weight * r_sse / r_n + n_sse / n_n.clamp(min=1) / next_scale
            decay = sum((p ** 2).sum() for n, p in model.named_parameters() if n in DECAYED)
            optimizer.zero_grad()
            (loss + settings.weight_decay * decay).backward()
            optimizer.step()
            total += float(loss.detach()) * len(b.episodes)
            count += len(b.episodes)
        refit_readouts(model, data, train_eps, groups, alphas)
        row = {"epoch": epoch, "train_loss": round(total / max(count, 1), 6)}
        if val_batches:
            val_loss, val_recon, val_next = _scaled_loss(model, val_batches, weight, next_scale)
            row.update(validation_loss=round(val_loss, 6), validation_reconstruction=round(val_recon, 6),
                       validation_next=round(val_next, 6))
            if val_loss < best_loss - 1e-6:
                best_loss, best_state, waited, fit.best_epoch = val_loss, copy.deepcopy(model.state_dict()), 0, epoch
            else:
                waited += 1
        else:
            best_state, fit.best_epoch = copy.deepcopy(model.state_dict()), epoch
        fit.history.append(row)
        if val_batches and waited >= settings.patience:
            break
    if progress and hasattr(epochs, "close"):
        epochs.close()
    model.load_state_dict(best_state)
    model.eval()
    return fit


def predict(model: Coordinator, data: Data, episodes: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat per-message states (N, rank), reconstructions and next-message predictions (N, D) in embedding
    space, for the messages of ``episodes`` (default: all; other rows stay zero)."""
    seq = data.seq
    episodes = np.arange(len(seq.episode_ids)) if episodes is None else np.asarray(episodes)
    n = len(seq.embeddings)
    states = np.zeros((n, model.rank), np.float32)
    recon = np.zeros((n, seq.dim), np.float32)
    nxt = np.zeros((n, seq.dim), np.float32)
    center, spread = model.center.numpy(), float(model.spread)
    model.eval()
    with deterministic_torch(0), torch.no_grad():  # the seed is unused here: inference draws nothing
        for b in data.batches(episodes, 256):
            s = model.states(b.z, b.slots, b.source)
            r, p = model.readouts(s, b.z, b.slots, b.source, b.base_next)
            m = b.mask.numpy()
            rows = np.concatenate([np.arange(seq.offsets[e], seq.offsets[e + 1]) for e in b.episodes])
            states[rows] = s.numpy()[m]
            recon[rows] = r.numpy()[m] * spread + center
            nxt[rows] = p.numpy()[m] * spread + center
    return states, recon, nxt


def new_model(seq: Sequences, train_eps: np.ndarray, settings: LatentSettings, n_sources: int) -> Coordinator:
    """A model standardized on and initialised from (PCA) the training messages."""
    with deterministic_torch(settings.seed):
        model = Coordinator(seq.dim, ROLE_SLOTS, n_sources, settings.rank, settings.cell)
        train_x = seq.embeddings[seq.rows_of(train_eps)].astype(np.float64)
        center = train_x.mean(axis=0)
        spread = float((train_x - center).std()) or 1.0
        model.center.copy_(torch.from_numpy(center).float())
        model.spread.fill_(spread)
        model.init_from_pca((train_x - center) / spread, settings.memory_init)
    return model


def states_of(model: Coordinator, data: Data, episodes: np.ndarray) -> np.ndarray:
    """(N, rank) states after every message of ``episodes`` (other rows zero)."""
    seq = data.seq
    out = np.zeros((len(seq.embeddings), model.rank), np.float32)
    model.eval()
    with torch.no_grad():
        for b in data.batches(np.asarray(episodes), 256):
            rows = np.concatenate([np.arange(seq.offsets[e], seq.offsets[e + 1]) for e in b.episodes])
            out[rows] = model.states(b.z, b.slots, b.source).numpy()[b.mask.numpy()]
    return out


def _memory_features(model: Coordinator, states: np.ndarray, z: np.ndarray, slots: np.ndarray, source: np.ndarray
                     ) -> np.ndarray:
    with torch.no_grad():
        return model.memory_features(torch.from_numpy(states)[:, None], torch.from_numpy(z)[:, None],
                                     torch.from_numpy(slots.astype(np.int64))[:, None],
                                     torch.from_numpy(source.astype(np.int64)))[:, 0].numpy().astype(np.float64)


def refit_readouts(model: Coordinator, data: Data, episodes: np.ndarray, groups: np.ndarray,
                   alphas: dict[int, float] | None = None) -> dict[int, float]:
    """Closed-form read-outs for the current states, on ``episodes`` (training episodes only):

    reconstruction C h + c by least squares; the memory map G by ridge regression of the ridge's residuals
    (next message - f(current, speaker)) on what the history adds to the state (``memory_features``),
    one per source, its penalty chosen by grouped CV over ``groups`` (each episode's group) unless ``alphas``
    (source index -> penalty) gives it. Returns the penalties used.
    """
    from coordset.latent.baselines import ALPHAS, choose_alpha, ridge_fit

    seq = data.seq
    rows = seq.rows_of(episodes)
    states = states_of(model, data, episodes)
    h, z = states[rows].astype(np.float64), data.z[rows].astype(np.float64)
    ones = np.ones((len(rows), 1))
    recon = np.linalg.lstsq(np.hstack([h, ones]), z, rcond=None)[0]
    with torch.no_grad():
        model.reconstruct.weight.copy_(torch.from_numpy(recon[:-1].T).float())
        model.reconstruct.bias.copy_(torch.from_numpy(recon[-1]).float())
    current, nxt = seq.pairs_of(episodes)
    source = data.source[seq.episode_of_row()[current]]
    feats = _memory_features(model, states[current], data.z[current], seq.slots[current], source)
    target = data.z[nxt].astype(np.float64) - data.base[current]
    width = feats.shape[1] // model.n_sources
    weight = np.zeros((feats.shape[1], target.shape[1]))
    alphas = dict(alphas or {})
    # Features far below the state's own scale carry no memory (e.g. A = 0): left out rather than blown up.
    floor = 1e-4 * float(np.abs(h).mean() + 1e-12)
    for q in range(model.n_sources):
        mine = np.flatnonzero(source == q)
        if len(mine) < 2:
            continue
        cols = np.arange(q * width, (q + 1) * width)
        x = feats[np.ix_(mine, cols)]  # no intercept: where history adds nothing, G adds nothing
        scale = np.sqrt((x ** 2).mean(axis=0))
        keep = scale > floor
        if not keep.any():
            continue
        xs = x[:, keep] / scale[keep]
        if q not in alphas:
            alphas[q] = choose_alpha(xs, target[mine], groups[seq.episode_of_row()[current[mine]]], ALPHAS,
                                     center=False)
        coef, _, _ = ridge_fit(xs, target[mine], alphas[q], center=False)
        weight[cols[keep]] = coef / scale[keep][:, None]
    with torch.no_grad():
        model.memory.weight.copy_(torch.from_numpy(weight.T).float())
    return alphas
