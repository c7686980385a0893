"""Shared entry-point wrapper: user-fixable errors print one clear line and exit 2."""

from __future__ import annotations

import sys
from collections.abc import Callable

from coordset.errors import USER_ERRORS


def run(main: Callable[[], None]) -> None:
    try:
        main()
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
