"""Chatbot Arena conversations from the Hugging Face Hub (a gated dataset, so it needs HF_TOKEN)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from coordset.errors import CoordsetError

ARENA_FILES = ["data/*.parquet"]


def fetch_chatbot_arena(out_dir: Path, *, repo_id: str, revision: str) -> str:
    """Download the arena parquet files at ``revision``; return the resolved commit sha.

    The commit actually served is written to ``out_dir/REVISION`` so a build records what it read
    even when ``revision`` names a branch.
    """
    token = os.environ.get("HF_TOKEN")
    if not token:
        raise CoordsetError(
            f"source chatbot_arena: {repo_id} is gated on the Hugging Face Hub. Accept its terms at "
            f"https://huggingface.co/datasets/{repo_id}, create a read token at "
            "https://huggingface.co/settings/tokens and export HF_TOKEN=<token>; or remove "
            "chatbot_arena from sources.use in params.yaml."
        )
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        sha = HfApi(token=token).dataset_info(repo_id, revision=revision).sha
        snapshot_download(repo_id, repo_type="dataset", revision=sha, allow_patterns=ARENA_FILES,
                          local_dir=out_dir, token=token)
    except (HfHubHTTPError, OSError) as exc:
        raise CoordsetError(f"source chatbot_arena: cannot download {repo_id}@{revision}: {exc}") from None
    # huggingface_hub keeps download metadata (with times) under local_dir/.cache: not part of the data.
    shutil.rmtree(out_dir / ".cache", ignore_errors=True)
    (out_dir / "REVISION").write_text(f"{sha}\n", encoding="utf-8")
    return sha or revision
