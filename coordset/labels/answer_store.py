"""Share the LLM answer store through the DVC remote: ``python -m coordset.labels.answer_store push|pull``.

The answer store (:mod:`coordset.labels.llm_cache`) is not a DVC output, so ``dvc push`` does not carry
it. This command copies its entries to (``push``) or from (``pull``) the folder ``llm-answers/`` at the
root of a DVC remote (the default one, or ``-r NAME``), through DVC's own filesystems, so it works with
every remote ``dvc push`` can list and write (a local or network directory, S3 and S3-compatible
servers, ...) with the same credentials; or to/from a plain folder (``--to DIR`` / ``--from DIR``, e.g.
``pull --from data/llm_cache`` imports the answers an older checkout kept as a DVC output).

Entries are content-addressed (the file name is the sha256 of the request), so copying never conflicts:
an entry the destination lacks is copied; one both sides hold with different sizes is merged (no answer
is dropped, :func:`coordset.labels.llm_cache.merge_answers`); an identical one is left alone. Nothing is
ever deleted, on either side. Pulled files are checked (valid JSON entry for the key its name says)
before they are written, each atomically; a file that is not an entry is skipped and reported.

``where`` prints the store's path and how many entries it holds.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordset.errors import CoordsetError
from coordset.labels.llm_cache import (
    AnswerCache,
    CacheEntry,
    entry_bytes,
    is_key,
    merge_answers,
    parse_entry,
    store_dir,
)

REMOTE_DIR = "llm-answers"  # under the remote's root, beside DVC's files/md5 (never a 2-hex-digit name)
JOBS = 16


@dataclass
class Transfer:
    copied: int = 0      # entries the destination lacked
    merged: int = 0      # entries both held, differently: the destination now has the answers of both
    unchanged: int = 0   # entries the destination already held as they are
    skipped: list[str] = field(default_factory=list)  # source files that are not valid entries

    def summary(self, verb: str, where: str) -> str:
        text = f"{verb} {self.copied} new, {self.merged} merged, {self.unchanged} already there: {where}"
        if self.skipped:
            text += f"; skipped {len(self.skipped)} file(s) that are not answer entries (first: {self.skipped[0]})"
        return text


@dataclass(frozen=True)
class Location:
    """A folder of entries on some DVC filesystem (``<path>/<key[:2]>/<key>.json``)."""

    fs: Any      # dvc_objects FileSystem
    path: str
    label: str

    def entry_path(self, key: str) -> str:
        return self.fs.join(self.path, key[:2], f"{key}.json")

    def listing(self) -> dict[str, int]:
        """{key: size} of every entry file."""
        try:
            found = self.fs.fs.find(self.path, detail=True)  # fsspec (S3, ...): one listing, sizes included
            if not isinstance(found, dict):  # DVC's local filesystem: paths only; a stat is cheap there
                found = {path: {"size": os.path.getsize(path)} for path in found}
        except FileNotFoundError:
            return {}
        out = {}
        for path, info in found.items():
            *_, folder, name = ("/" + path.replace("\\", "/")).rsplit("/", 2)
            key = name.removesuffix(".json")
            if name.endswith(".json") and is_key(key) and folder == key[:2]:
                out[key] = int(info.get("size") or 0)
        return out


def local_location(folder: str | os.PathLike[str]) -> Location:
    from dvc_objects.fs.local import LocalFileSystem

    path = str(Path(folder).expanduser().resolve())
    return Location(LocalFileSystem(), path, path)


def remote_location(project: Path, name: str | None) -> Location:
    """``llm-answers/`` at the root of DVC remote ``name`` (None: the default remote) of ``project``."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(project)) as repo:
            remote = repo.cloud.get_remote(name)
    except DvcException as exc:
        raise CoordsetError(f"DVC remote {name or '(default)'}: {exc}") from None
    path = remote.fs.join(remote.path, REMOTE_DIR)
    return Location(remote.fs, path, f"remote {remote.name!r} ({remote.fs.unstrip_protocol(path)})")


def _read_entry(location: Location, key: str) -> CacheEntry:
    return parse_entry(location.fs.cat_file(location.entry_path(key)), key)


def push(store: Path, dest: Location, jobs: int = JOBS) -> Transfer:
    """Copy (or merge) every entry of the local store into ``dest``; nothing is deleted."""
    cache = AnswerCache(store)
    there = dest.listing()
    result = Transfer()

    def one(key: str) -> str:
        local = cache.path(key)
        if key not in there:
            dest.fs.put_file(str(local), dest.entry_path(key))  # DVC writes each file atomically
            return "copied"
        if there[key] == local.stat().st_size:
            return "unchanged"
        mine = cache.load(key)
        assert mine is not None
        try:
            theirs = _read_entry(dest, key)
        except (ValueError, KeyError, TypeError):
            theirs = CacheEntry(key=key, model=mine.model)  # not an entry: replaced by a valid one
        merged = CacheEntry(key=key, model=theirs.model or mine.model,
                            answers=merge_answers(theirs.answers, mine.answers))
        if merged.answers == theirs.answers:
            return "unchanged"
        _put_bytes(dest, key, entry_bytes(merged))
        return "merged"

    _tally(result, _map(one, cache.keys(), jobs))
    return result


def pull(store: Path, source: Location, jobs: int = JOBS) -> Transfer:
    """Copy (or merge) every entry of ``source`` into the local store, each checked and written atomically."""
    cache = AnswerCache(store)
    here = {key: cache.path(key).stat().st_size for key in cache.keys()}
    result = Transfer()

    def one(key: str) -> str:
        try:
            theirs = _read_entry(source, key)
        except (ValueError, KeyError, TypeError):
            return f"skipped:{source.entry_path(key)}"
        if key in here and here[key] == len(entry_bytes(theirs)):
            return "unchanged"
        mine = cache.load(key)
        if mine is not None and merge_answers(mine.answers, theirs.answers) == mine.answers:
            return "unchanged"
        cache.store(theirs)  # merged under the store's lock with what is on disk: nothing dropped
        return "copied" if mine is None else "merged"

    listing = source.listing()
    todo = [k for k in sorted(listing) if k not in here or here[k] != listing[k]]
    result.unchanged += len(listing) - len(todo)
    _tally(result, _map(one, todo, jobs))
    return result


def _put_bytes(dest: Location, key: str, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(suffix=".json")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        dest.fs.put_file(tmp, dest.entry_path(key))
    finally:
        os.unlink(tmp)


def _map(fn: Callable[[str], str], keys: list[str], jobs: int) -> list[str]:
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(fn, keys))


def _tally(result: Transfer, outcomes: list[str]) -> None:
    for outcome in outcomes:
        if outcome.startswith("skipped:"):
            result.skipped.append(outcome.removeprefix("skipped:"))
        else:
            setattr(result, outcome, getattr(result, outcome) + 1)


def find_project(start: Path) -> Path:
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        return Path(Repo.find_root(str(start)))
    except DvcException:
        return start.resolve()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m coordset.labels.answer_store",
                                     description="Share the LLM answer store (not a DVC output) through the DVC "
                                                 "remote or a folder.")
    parser.add_argument("--store", type=Path, default=None,
                        help="the answer store (default: $COORDSET_LLM_STORE, else .git/coordset/llm-answers)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("where", help="print the store's path and its number of entries")
    for name, flag, what in (("push", "--to", "into"), ("pull", "--from", "from")):
        cmd = sub.add_parser(name, help=f"copy answers {what} the DVC remote's {REMOTE_DIR}/ (or a folder)")
        group = cmd.add_mutually_exclusive_group()
        group.add_argument("-r", "--remote", default=None, help="DVC remote name (default: the default remote)")
        group.add_argument(flag, dest="folder", type=Path, default=None, help="a plain folder instead of a remote")
        cmd.add_argument("-j", "--jobs", type=int, default=JOBS, help=f"parallel transfers (default {JOBS})")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    project = find_project(Path.cwd())
    store = args.store.resolve() if args.store is not None else store_dir(cwd=project)
    if args.command == "where":
        print(f"{store} ({len(AnswerCache(store).keys())} entries)")
        return 0
    other = local_location(args.folder) if args.folder is not None else remote_location(project, args.remote)
    if args.command == "push":
        print(push(store, other, args.jobs).summary("pushed", other.label))
    else:
        print(pull(store, other, args.jobs).summary("pulled", f"{other.label} -> {store}"))
    return 0


if __name__ == "__main__":
    from coordset.errors import run_main

    run_main(main)
