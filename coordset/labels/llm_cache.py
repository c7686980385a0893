"""Answer store of the LLM judge: one small JSON file per request, outside every path DVC manages.

Layout: ``<store>/<key[:2]>/<key>.json`` where ``key`` is the sha256 of the canonical JSON of the whole
request that decides the answer (model, every prompt message, temperature, response format): the store
is content-addressed, so one store can serve every branch, experiment and clone without a conflict.

Where it lives (:func:`store_dir`): ``$COORDSET_LLM_STORE`` when set, else ``coordset/llm-answers`` in the
git common directory of the project (``.git/coordset/llm-answers`` in a plain clone; the main clone's
``.git`` from any linked worktree). The project is ``$DVC_ROOT``, which DVC sets for every stage command
and, for ``dvc exp run --temp`` and queued experiments, points at the *main* project rather than the
temporary workspace the stage runs in, so all of them read and write the same store. Nothing DVC or git
does to the workspace (``dvc checkout``, the forced checkout ``dvc exp run`` makes before a stage,
``dvc exp apply``, ``git stash``, switching branches, ``git clean``) touches it. It is not a DVC output:
``python -m coordset.labels.answer_store push|pull`` shares it through the DVC remote.

Each file is replaced atomically (a uniquely named temporary file, fsync, ``os.replace``) every time an
answer arrives, so a run killed at any point leaves each file either as it was or with the new answer:
nothing received and written is lost, and nothing half-written is ever read. Writers of different keys
never interfere; two writers of the same key (two queued experiments at once) merge the answers already on
disk into theirs, under a lock beside the store, before replacing the file (every answer has a random id,
so a merge keeps each paid answer exactly once). A killed writer can leave a dot-named temporary file behind;
:meth:`AnswerCache.remove_stale_temporaries` deletes those whose writer is gone (the temporary's name
holds its host and process id) or that are older than an hour, never one a live writer still owns.

An entry holds only the model name, the key and the answers (content, finish reason, token usage, the
validation result, what served it (``local`` or the endpoint's host name, and the model id the response
named) and the answer's random id); never the API key, the endpoint's address or any header.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordset.errors import CoordsetError

CACHE_FORMAT = 1
STORE_ENV = "COORDSET_LLM_STORE"
STORE_SUBDIR = Path("coordset") / "llm-answers"  # inside the git common dir
STALE_TEMPORARY_S = 3600.0  # a temporary this old belongs to no live writer (one write takes milliseconds)
_UMASK = os.umask(0o022)
os.umask(_UMASK)
_HOST = "".join(c if c.isalnum() or c == "-" else "_" for c in socket.gethostname())[:64] or "host"


def git_common_dir(start: str | os.PathLike[str]) -> Path | None:
    """The git common directory (``.git`` of the main clone) of the repository holding ``start``, if any."""
    start = Path(start).resolve()
    for folder in (start, *start.parents):
        dot_git = folder / ".git"
        if dot_git.is_dir():
            git_dir = dot_git
        elif dot_git.is_file():  # a linked worktree or submodule: "gitdir: <path>"
            text = dot_git.read_text(encoding="utf-8").strip()
            if not text.startswith("gitdir:"):
                continue
            git_dir = (folder / text.removeprefix("gitdir:").strip()).resolve()
        else:
            continue
        common = git_dir / "commondir"
        if common.is_file():
            return (git_dir / common.read_text(encoding="utf-8").strip()).resolve()
        return git_dir.resolve()
    return None


def project_root(environ: Mapping[str, str] | None = None, cwd: str | os.PathLike[str] | None = None) -> Path:
    """``$DVC_ROOT`` (the main project, also inside ``dvc exp run --temp`` and queue workers), else ``cwd``."""
    environ = os.environ if environ is None else environ
    root = Path(environ.get("DVC_ROOT") or cwd or os.getcwd()).resolve()
    # Belt and braces: a stage started by hand inside an experiment's temporary workspace still finds the
    # project it belongs to (DVC keeps those workspaces in <project>/.dvc/tmp/exps/).
    parts = root.parts
    for i in range(len(parts) - 3):
        if parts[i:i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return root


def store_dir(environ: Mapping[str, str] | None = None, cwd: str | os.PathLike[str] | None = None) -> Path:
    """Where LLM answers are kept: ``$COORDSET_LLM_STORE``, else ``<git common dir>/coordset/llm-answers``.

    A relative ``$COORDSET_LLM_STORE`` is taken from the project root; it must point outside the workspace
    (``git stash -u``, ``git clean`` and DVC's experiment runs move or delete files there), e.g.
    ``../coordset-llm-answers`` beside the clone, or anywhere inside ``.git``. A project outside git (no
    experiments, no stash) keeps it in ``<project>/.coordset/llm-answers``, which no DVC command touches.
    """
    environ = os.environ if environ is None else environ
    root = project_root(environ, cwd)
    configured = environ.get(STORE_ENV)
    if configured:
        chosen = (root / Path(configured).expanduser()).resolve()
        if (chosen.is_relative_to(root) and git_common_dir(root) is not None
                and not chosen.is_relative_to(root / ".git")):
            raise CoordsetError(f"{STORE_ENV}={configured} puts the LLM answer store at {chosen}, inside the "
                                f"workspace {root}, where git and DVC commands can move or delete it: choose a "
                                "folder outside the workspace (e.g. ../coordset-llm-answers) or unset it to "
                                "use .git/coordset/llm-answers")
        return chosen
    common = git_common_dir(root)
    return common / STORE_SUBDIR if common is not None else root / ".coordset" / "llm-answers"


def request_key(request: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a request (sorted keys, no whitespace, UTF-8)."""
    canonical = json.dumps(request, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Answer:
    """One answer received from the endpoint, with its validation result.

    ``id`` tells paid answers apart (two calls can return the same text): merging two copies of an entry
    keeps each answer once, however often the copies were merged.
    """

    content: str | None
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    valid: bool
    problem: str | None
    # What answered: ``local`` (a loopback server) or the endpoint's host name, and the model id the
    # response named, e.g. ``api.openai.com:gpt-4o-mini-2024-07-18``; no address, port, key or header.
    served_by: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def to_json(self) -> dict[str, Any]:
        return {"content": self.content, "finish_reason": self.finish_reason,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "valid": self.valid, "problem": self.problem, "served_by": self.served_by, "id": self.id}

    @classmethod
    def from_json(cls, obj: dict[str, Any], position: int = 0) -> Answer:
        # Entries written before answers had ids get one derived from their place and bytes, the same in
        # every copy of the entry.
        answer_id = obj.get("id") or f"legacy-{position}-" + hashlib.sha256(
            json.dumps(obj, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()[:32]
        return cls(content=obj["content"], finish_reason=obj["finish_reason"],
                   prompt_tokens=int(obj["prompt_tokens"]), completion_tokens=int(obj["completion_tokens"]),
                   valid=bool(obj["valid"]), problem=obj["problem"], served_by=obj.get("served_by"),
                   id=str(answer_id))


@dataclass
class CacheEntry:
    """Every answer received so far for one request key, oldest first."""

    key: str
    model: str
    answers: list[Answer] = field(default_factory=list)


def parse_entry(text: str | bytes, key: str) -> CacheEntry:
    """An entry from a file's text; ValueError (or KeyError, TypeError) when it is not one for ``key``."""
    obj = json.loads(text)
    if obj["format"] != CACHE_FORMAT or obj["key"] != key:
        raise ValueError(f"format {obj['format']!r} / key {obj['key']!r} do not match")
    answers = [Answer.from_json(a, position) for position, a in enumerate(obj["answers"])]
    return CacheEntry(key=key, model=str(obj["model"]), answers=answers)


def entry_bytes(entry: CacheEntry) -> bytes:
    """The bytes a store file holds for ``entry`` (sorted keys, trailing newline: reproducible)."""
    obj = {"format": CACHE_FORMAT, "key": entry.key, "model": entry.model,
           "answers": [a.to_json() for a in entry.answers]}
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def merge_answers(stored: list[Answer], mine: list[Answer]) -> list[Answer]:
    """Every answer of either list once (by ``id``): ``stored`` in its order, then those only ``mine`` has.

    When one list extends the other (answers of a key are only ever appended) this is the longer one; two
    writers that each appended answers keep both. The first valid answer of the result is the label, so the
    answer that reached a store first stays the label there.
    """
    seen = {a.id for a in stored}
    return stored + [a for a in mine if a.id not in seen]


def is_key(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


class AnswerCache:
    """Directory of per-key JSON entries (the answer store); safe for concurrent writers, even of one key."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def remove_stale_temporaries(self, *, now: float | None = None) -> int:
        """Delete temporary files that killed writers left behind; returns how many.

        A temporary is stale when the process named in it (on this host) is gone, or when it is older than
        ``STALE_TEMPORARY_S``; one that a live writer (another experiment, say) still owns is kept.
        """
        now = time.time() if now is None else now
        removed = 0
        for tmp in self.root.glob("*/.*.tmp"):
            parts = tmp.name[1:-len(".tmp")].split(".")
            owner_gone = False
            if len(parts) == 4 and parts[1] == _HOST and parts[2].isdigit():
                owner_gone = not _alive(int(parts[2]))
            try:
                old = now - tmp.stat().st_mtime > STALE_TEMPORARY_S
            except FileNotFoundError:
                continue  # its writer just finished
            if owner_gone or old:
                tmp.unlink(missing_ok=True)
                removed += 1
        return removed

    def load(self, key: str) -> CacheEntry | None:
        path = self.path(key)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            return parse_entry(text, key)
        except (ValueError, KeyError, TypeError) as exc:
            raise CoordsetError(f"{path}: not a valid LLM answer store entry ({exc}); delete the file to ask "
                                "the endpoint again") from None

    def refresh(self, entry: CacheEntry) -> CacheEntry:
        """``entry`` with the answers another writer has stored for its key since it was read."""
        on_disk = self._load_or_none(entry.key)
        if on_disk is not None:
            entry.answers = merge_answers(on_disk.answers, entry.answers)
        return entry

    def store(self, entry: CacheEntry) -> None:
        """Write ``entry`` atomically, merged with what is on disk (no answer another writer stored is dropped)."""
        with self._locked():
            self.refresh(entry)
            self._replace(self.path(entry.key), entry_bytes(entry))

    def keys(self) -> list[str]:
        """Every key with an entry on disk (sorted)."""
        return sorted(p.stem for p in self.root.glob("*/*.json") if not p.name.startswith("."))

    def _load_or_none(self, key: str) -> CacheEntry | None:
        try:
            return self.load(key)
        except CoordsetError:
            return None  # an unreadable file is replaced by the entry being stored

    def _replace(self, target: Path, data: bytes) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        prefix = f".{target.stem}.{_HOST}.{os.getpid()}."
        fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp_name, 0o666 & ~_UMASK)  # mkstemp makes 0600; entries get the usual permissions
            os.replace(tmp_name, target)
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)

    def _locked(self) -> _StoreLock:
        # Beside the store, not in it: the store holds entries (and a killed writer's temporaries) only.
        return _StoreLock(self.root.parent / f".{self.root.name}.lock")


class _StoreLock:
    """An exclusive ``flock`` on ``.<store>.lock`` beside the store around one read-merge-replace (a no-op
    without fcntl)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def __enter__(self) -> _StoreLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the lock
            self.fd = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True
