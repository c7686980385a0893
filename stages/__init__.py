"""Thin ``python -m stages.<name>`` entry points; the work lives in the ``coordset`` package."""
