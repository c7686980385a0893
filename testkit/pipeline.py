"""A throwaway copy of the repository in which tests run the real `dvc repro`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MIRROR = Path(os.environ.get("COORDSET_MIRROR", REPO.parent / "shared" / "mirror")).resolve()
DVC_ENV = {"DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "COORDSET_MIRROR": str(MIRROR)}


# A small real subset of the default sources, so that a full `dvc repro` takes a minute or two: MT-Bench whole
# (1,200 episodes, 1,118 distinct texts), the first logs of each multi-agent source.
SMALL_BUILD = {"who_when": 12, "llm_deliberation": 6, "chatdev": 4}


def copy_repo(dest: Path, *, small: bool = False) -> Path:
    """Copy the project's tracked and untracked-but-not-ignored files into a fresh git repo.

    ``small`` restricts the multi-agent sources to their first few episodes (``SMALL_BUILD``).
    """
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    if small:
        import yaml

        params = yaml.safe_load((dest / "params.yaml").read_text())
        for name, n in SMALL_BUILD.items():
            params["sources"][name]["max_episodes"] = n
        (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # Start from no outputs at all: the committed dvc.lock stays, the data does not come along.
    git(dest, "init", "-q")
    git(dest, "add", "-A")
    git(dest, "commit", "-qm", "copy of the project under test")
    return dest


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout


def dvc(cwd: Path, *args: str, check: bool = True, env: dict[str, str] | None = None,
        timeout: float = 900) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd,
                            env={**os.environ, **DVC_ENV, **(env or {})}, capture_output=True, text=True,
                            timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def lock_hashes(project: Path) -> dict[str, str]:
    """{output path: md5} for every stage output recorded in dvc.lock."""
    import yaml

    lock = yaml.safe_load((project / "dvc.lock").read_text())
    hashes = {}
    for stage in lock["stages"].values():
        for out in stage.get("outs", []):
            hashes[out["path"]] = out["md5"]
    return hashes


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())
