"""One error type for everything a user can fix; stage entry points turn it into exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Callable


class CoordsetError(Exception):
    """A problem with input, params or environment that the user can act on.

    The message must name the file, row, field, param key or endpoint involved
    and, where there is one, what to do about it.
    """


class ParamError(CoordsetError):
    """A value in params.yaml is missing, of the wrong type or out of range."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"params.yaml: '{key}' {problem}")
        self.key = key


def run_main(main: Callable[[], int | None]) -> None:
    """Run a command's ``main``: a user error prints one clear line and exits 2; else exit with its status.

    User errors are coordset's own and tables that break a schema. (``schemas`` loads pandas, hence numpy, so
    it is imported here, not at the top: ``coordset.numerics`` needs this module before numpy loads.)
    """
    from schemas import SchemaViolation

    try:
        status = main()
    except (CoordsetError, SchemaViolation) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.exit(status or 0)
