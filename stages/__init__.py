"""Thin ``python -m stages.<name>`` entry points; the work lives in the ``coordset`` package.

This runs before a stage module imports anything: it pins the numeric code paths (``numerics`` in
params.yaml, see ``coordset/numerics.py``) while numpy and torch are not loaded yet.
"""

from coordset.numerics import pin_from_params_file

pin_from_params_file()
