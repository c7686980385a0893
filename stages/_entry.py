"""Shared entry point of the stages: user-fixable errors print one clear line and exit 2."""

from __future__ import annotations

from coordset.errors import run_main as run  # noqa: F401  (the stages call ``run(main)``)
