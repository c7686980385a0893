"""Benchmarks: every stage measured against its raw library limit in the same run.

Some benchmarks embed in this process, so it pins the numeric code paths (``numerics`` in the repository's
params.yaml) before numpy or torch loads, as ``stages/__init__.py`` does for a stage.
"""

from pathlib import Path

from coordset.numerics import pin_from_params_file

pin_from_params_file(Path(__file__).resolve().parent.parent / "params.yaml")
