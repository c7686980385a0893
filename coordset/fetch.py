"""Fetch each source's pinned files, verify them against sha256 lists kept in the repo.

Files come from the pinned upstream URL, or, when ``COORDSET_MIRROR`` is set, from the same
relative path under the mirror. Both are verified against ``coordset/pins/<source>.sha256``, so
where the bytes came from cannot change an output.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from coordset.errors import CoordsetError

PINS_DIR = Path(__file__).parent / "pins"
MIRROR_ENV = "COORDSET_MIRROR"


@dataclass(frozen=True)
class Pinned:
    """Files pinned by sha256 at a fixed upstream location: ``base_url + path`` for each pinned path."""

    name: str  # the folder under the mirror
    base_url: str
    pin_file: Path


TIKTOKEN = Pinned("tiktoken", "https://openaipublic.blob.core.windows.net/encodings/", PINS_DIR / "tiktoken.sha256")


def read_pins(pin_file: Path) -> dict[str, str]:
    """Parse a ``sha256  relative/path`` list (``#`` starts a comment) into {path: sha256}."""
    pins: dict[str, str] = {}
    for lineno, line in enumerate(pin_file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        digest, _, rel = line.partition("  ")
        if len(digest) != 64 or not rel:
            raise CoordsetError(f"{pin_file}:{lineno}: expected 'sha256  path', got {line!r}")
        pins[rel] = digest
    return pins


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def mirror_root() -> Path | None:
    value = os.environ.get(MIRROR_ENV)
    return Path(value) if value else None


def _download(url: str, dest: Path, timeout: float) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(dest, "wb") as out:
            shutil.copyfileobj(resp, out)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise CoordsetError(
            f"cannot download {url}: {getattr(exc, 'reason', exc)}. Without network access, set "
            f"{MIRROR_ENV}=<path to>/shared/mirror to read the same files from a local mirror."
        ) from None


def fetch_file(source: Pinned, rel: str, expected: str, dest: Path, *,
               mirror: Path | None, timeout: float = 60.0) -> None:
    """Copy or download one pinned file to ``dest`` and verify its sha256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if mirror is not None:
        src = mirror / source.name / rel
        if not src.is_file():
            raise CoordsetError(
                f"mirror file missing: {src} (pinned in {source.pin_file.name}). The mirror at "
                f"{MIRROR_ENV}={mirror} is incomplete: restore that file, or unset {MIRROR_ENV} to download it."
            )
        shutil.copyfile(src, dest)
        origin = str(src)
    else:
        # Upstream paths may hold characters a URL cannot (Who&When's "&"): quote them.
        origin = source.base_url + urllib.parse.quote(rel)
        _download(origin, dest, timeout)
    actual = sha256_file(dest)
    if actual != expected:
        dest.unlink()
        raise CoordsetError(
            f"sha256 mismatch for {rel} from {origin}: expected {expected}, got {actual}. The file is not the "
            f"pinned upstream version: replace it with the pinned one (see {source.pin_file.name})."
        )


def fetch_pinned(source: Pinned, files: dict[str, str], out_dir: Path, *, mirror: Path | None = None,
                 progress: bool = False) -> list[str]:
    """Fetch the given pinned files ({path: sha256}) into ``out_dir`` (same relative paths); return them."""
    items = sorted(files.items())
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc=f"fetch {source.name}", unit="file")
    for rel, digest in items:
        fetch_file(source, rel, digest, out_dir / rel, mirror=mirror)
    return sorted(files)


def replace_dir(tmp_dir: Path, target: Path) -> None:
    """Move a fully written directory into place; the old one is removed only afterwards."""
    old = target.with_name(f".{target.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp_dir, target)
    if old.exists():
        shutil.rmtree(old)
