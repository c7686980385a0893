"""dvc.yaml lists what every stage really reads: its Python import closure and the data paths it names.

A module a stage imports (directly, lazily inside a function, or through another project module, a
package's ``__init__`` included) that its ``deps`` miss would let ``dvc repro`` call stale outputs current.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO

PACKAGES = ("coordset", "schemas", "stages")
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _module_path(dotted: str) -> Path | None:
    base = REPO.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported(path: Path) -> set[Path]:
    """Project files that importing ``path`` executes: every module named, and the packages above it."""
    out: set[Path] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] not in PACKAGES:
                continue
            out |= {p for i in range(1, len(parts) + 1) if (p := _module_path(".".join(parts[:i]))) is not None}
    return out


def import_closure(module: str) -> set[Path]:
    start = _module_path(module)
    assert start is not None, module
    seen: set[Path] = set()
    todo = [start]
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo += _imported(path) - seen
    return seen


def _data_paths(files: set[Path]) -> set[str]:
    """Pipeline paths the stage's code names as string literals (data/..., metrics/..., models/...)."""
    found = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith(
                    ("data/", "metrics/", "models/")) and " " not in node.value:
                found.add(node.value.rstrip("/"))
    return found


def _covered(rel: str, declared: list[str]) -> bool:
    return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in declared)


def _outputs(stage: dict) -> list[str]:
    return [next(iter(o)) if isinstance(o, dict) else o
            for key in ("outs", "metrics", "plots") for o in stage.get(key, [])]


ALL_OUTPUTS = {o: name for name, stage in STAGES.items() for o in _outputs(stage)}


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_cover_every_imported_module(name: str) -> None:
    stage = STAGES[name]
    module = stage["cmd"].split("python -m ", 1)[1].split()[0]
    deps = [str(d) for d in stage.get("deps", [])]
    files = import_closure(module)
    missing = sorted(str(p.relative_to(REPO)) for p in files if not _covered(str(p.relative_to(REPO)), deps))
    assert not missing, f"stage {name} imports {missing} but dvc.yaml does not list them in its deps"
    # Pinned sha256 lists are data the stage reads through coordset.fetch.read_pins.
    if any("read_pins(" in p.read_text(encoding="utf-8") and "PINS_DIR" in p.read_text(encoding="utf-8")
           for p in files if p.name in ("tokens.py", "registry.py")) and name in ("fetch", "enrich"):
        assert _covered("coordset/pins/x.sha256", deps), f"stage {name} reads coordset/pins"
    # Every output of another stage that this stage's code names must be one of its deps (or its own output).
    own = _outputs(stage)
    for rel in sorted(_data_paths(files)):
        producer = next((s for o, s in ALL_OUTPUTS.items() if _covered(rel, [o]) or rel == o), None)
        if producer is not None and producer != name:
            assert _covered(rel, deps), f"stage {name} reads {rel} (an output of {producer}) without listing it"
        elif producer == name:
            assert _covered(rel, own)


def test_the_closure_sees_lazy_imports_and_package_inits() -> None:
    files = {str(p.relative_to(REPO)) for p in import_closure("stages.label")}
    assert "coordset/labels/llm.py" in files  # imported inside a function, only when LLM labels are on
    assert "coordset/sources/__init__.py" in files and "coordset/sources/who_when.py" in files
