"""Load and check params.yaml before any work, so a bad value fails fast and names its key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from coordset.errors import ParamError

PARAMS_FILE = Path("params.yaml")


def load_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            params = yaml.safe_load(fh)
    except FileNotFoundError as exc:
        raise ParamError(str(path), "not found: run from the repository root") from exc
    if not isinstance(params, dict):
        raise ParamError(str(path), "must be a mapping of keys to values")
    return params


def get(params: dict[str, Any], dotted: str) -> Any:
    """Return ``params['a']['b']`` for ``'a.b'``, raising a ParamError naming the key if missing."""
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ParamError(dotted, "is missing")
        node = node[part]
    return node


def has(params: dict[str, Any], dotted: str) -> bool:
    """Whether the optional key ``dotted`` is set."""
    try:
        get(params, dotted)
    except ParamError:
        return False
    return True


def require_int(params: dict[str, Any], dotted: str, *, low: int | None = None,
                high: int | None = None) -> int:
    value = get(params, dotted)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParamError(dotted, f"must be an integer, got {value!r}")
    if low is not None and value < low:
        raise ParamError(dotted, f"must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ParamError(dotted, f"must be <= {high}, got {value}")
    return value


def require_float(params: dict[str, Any], dotted: str, *, low: float | None = None,
                  high: float | None = None) -> float:
    value = get(params, dotted)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParamError(dotted, f"must be a number, got {value!r}")
    if low is not None and value < low:
        raise ParamError(dotted, f"must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ParamError(dotted, f"must be <= {high}, got {value}")
    return float(value)


def require_choice(params: dict[str, Any], dotted: str, choices: list[str] | tuple[str, ...]) -> str:
    value = get(params, dotted)
    if value not in choices:
        raise ParamError(dotted, f"must be one of {list(choices)}, got {value!r}")
    return value


def require_bool(params: dict[str, Any], dotted: str) -> bool:
    value = get(params, dotted)
    if not isinstance(value, bool):
        raise ParamError(dotted, f"must be true or false, got {value!r}")
    return value


def require_str(params: dict[str, Any], dotted: str) -> str:
    value = get(params, dotted)
    if not isinstance(value, str) or not value:
        raise ParamError(dotted, f"must be a non-empty string, got {value!r}")
    return value


def require_names(params: dict[str, Any], dotted: str) -> tuple[str, ...]:
    """A non-empty name, or a non-empty list of distinct non-empty names (e.g. one model or several)."""
    value = get(params, dotted)
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise ParamError(dotted, f"must be a name or a non-empty list of names, got {value!r}")
    if len(set(names)) != len(names):
        raise ParamError(dotted, f"lists a name twice: {names}")
    return tuple(names)
