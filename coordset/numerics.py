"""The ``numerics`` param: which floating-point code paths the stages' numeric libraries may take.

Float32/float64 results change in their last bits with the vector kernels a library picks for the CPU it runs on
(AVX-512 or AVX2, Intel or AMD code paths), and those bits reach the bytes of the embeddings, the latent model
and the labels. ``portable`` (the default) holds every library to one code path that any x86-64 CPU with AVX2
runs the same way, so a fresh clone's ``dvc repro`` reproduces the committed ``dvc.lock`` on Intel and AMD
alike; ``native`` lets each library take the machine's fastest kernels (and CUDA), with that machine's bytes.

Every switch below is an environment variable that its library reads once, when it loads, so ``pin`` must run
before numpy or torch is imported: ``stages/__init__.py`` calls it first thing in every stage process. This
module imports neither.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from coordset.errors import CoordsetError, ParamError
from coordset.params import load_params, require_choice

NUMERICS = ("portable", "native")
# Each was checked on torch 2.13 (CPU build, MKL 2024.2, oneDNN 3.12), numpy 2.4 and scipy 1.17 (OpenBLAS
# 0.3.30/0.3.31) on an AVX-512 AMD EPYC by comparing output bytes with and without it.
PORTABLE_ENV = {
    # torch: its own vectorised kernels (layer norm, softmax, GRU gates, pooling) on the AVX2 variant.
    "ATEN_CPU_CAPABILITY": "avx2",
    # MKL (torch's sgemm): its one code path documented to give the same results on Intel and non-Intel CPUs
    # (SSE2 without the approximate rcpps/rsqrtps). MKL's AVX2 branch is reproducible on Intel CPUs only: on an
    # AMD CPU MKL falls back to its automatic dispatch, which is why a lock built on a Xeon did not reproduce
    # on an EPYC. STRICT: results independent of the thread count.
    "MKL_CBWR": "COMPATIBLE,STRICT",
    # oneDNN (torch's GELU and some convolutions/RNNs): no AVX-512/AMX JIT kernels.
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "DNNL_MAX_CPU_ISA": "AVX2",         # the older name of the same switch, in case the caller set it
    # OpenBLAS in numpy and scipy (ridge, PCA, probes, cosines): the Haswell (AVX2) kernels on every CPU, one
    # thread, so neither the CPU model nor the core count picks the summation order.
    "OPENBLAS_CORETYPE": "Haswell",
    "OPENBLAS_NUM_THREADS": "1",
    # numpy's own SIMD loops (exp, log, reductions): nothing above AVX2 (x86-64-v3).
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
}
# Set by a caller, these would override the switches above.
PORTABLE_UNSET = ("MKL_ENABLE_INSTRUCTIONS",)
PORTABLE_CAPABILITY = "AVX2"
# The switches each library reads when it loads.
READ_AT_LOAD = {
    "torch": ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"),
    "numpy": ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "NPY_DISABLE_CPU_FEATURES"),
    "scipy": ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS"),
}


def numerics_mode(params: dict[str, Any]) -> str:
    """The ``numerics`` param, checked."""
    return require_choice(params, "numerics", NUMERICS)


def _unpinned(keys: tuple[str, ...]) -> list[str]:
    return sorted(k for k in keys if os.environ.get(k) != PORTABLE_ENV[k])


def pin(mode: str) -> None:
    """Hold numpy, scipy, torch, MKL and oneDNN to their portable code paths; ``native`` leaves them be.

    In a process that already loaded one of them without the switches it reads, this refuses rather than
    write other bytes than the committed ones (the stage must run in a fresh process, as ``dvc repro`` does).
    """
    if mode == "native":
        return
    if mode not in NUMERICS:
        raise ParamError("numerics", f"must be one of {list(NUMERICS)}, got {mode!r}")
    for library, keys in READ_AT_LOAD.items():
        missing = _unpinned(keys) if library in sys.modules else []
        if missing:
            raise CoordsetError(f"numerics: portable must be set before {library} is loaded, but this process "
                                f"loaded {library} without {', '.join(missing)}; run the stage in a fresh process "
                                f"(python -m stages.<name>) or set numerics: native")
    if "torch" in sys.modules and any(os.environ.get(k) for k in PORTABLE_UNSET):
        raise CoordsetError(f"numerics: portable: this process loaded torch with {', '.join(PORTABLE_UNSET)} set, "
                            f"which overrides MKL_CBWR; unset it or set numerics: native")
    os.environ.update(PORTABLE_ENV)
    for key in PORTABLE_UNSET:
        os.environ.pop(key, None)
    if "torch" in sys.modules:
        import torch

        capability = torch.backends.cpu.get_cpu_capability()
        if capability != PORTABLE_CAPABILITY:
            raise CoordsetError(f"numerics: portable needs an x86-64 CPU with AVX2, but torch runs {capability} "
                                f"kernels here; set numerics: native (the bytes will differ from the committed lock)")


def pin_from_params_file(path: str | Path = "params.yaml") -> None:
    """``pin`` by the ``numerics`` of ``path`` where it can; quietly nothing where it cannot (no readable params,
    a bad value, numpy already loaded): the stage calls ``pin`` again itself, and that call reports it."""
    try:
        pin(numerics_mode(load_params(path)))
    except (OSError, CoordsetError, ValueError):
        return
