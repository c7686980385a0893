"""The real local LLM for tests: llama.cpp's ``llama-server`` serving SmolLM2-135M-Instruct (Q4_1).

The session fixture :func:`llama_server` builds the server once into the user's cache
(:mod:`coordset.labels.local_server`; about 7 minutes the first time on 2 cores, instant afterwards) and serves
the model on a free port of 127.0.0.1. Where cmake, ninja or a compiler is missing it skips with the reason.

Use it from a test module with ``from testkit.llama import llama_server  # noqa: F401`` (a colleague edits
``tests/conftest.py``, so it is not defined there). pytest registers an imported fixture once per module, so
the server itself is shared at this module's level: every module of a session gets the same one, stopped
when the last of them is torn down at the end of the session.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from coordset.labels.local_server import BuildToolMissing, LocalLlamaServer, llama_server_binary

_lock = threading.Lock()
_shared: LocalLlamaServer | None = None
_users = 0


@contextlib.contextmanager
def llama_server_or_skip(**kwargs: Any) -> Iterator[LocalLlamaServer]:
    """A new started :class:`LocalLlamaServer` (``kwargs`` as its own); pytest.skip where it cannot be built."""
    try:
        binary = llama_server_binary()
    except BuildToolMissing as exc:
        pytest.skip(str(exc))
    with LocalLlamaServer(binary=binary, **kwargs) as server:
        yield server


@contextlib.contextmanager
def shared_llama_server() -> Iterator[LocalLlamaServer]:
    """The one default server of this process, started by the first user and stopped after the last."""
    global _shared, _users
    with _lock:
        if _shared is None:
            try:
                binary = llama_server_binary()
            except BuildToolMissing as exc:
                pytest.skip(str(exc))
            _shared = LocalLlamaServer(binary=binary).start()
        _users += 1
        server = _shared
    try:
        yield server
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                _shared = None
                server.stop()


@pytest.fixture(scope="session")
def llama_server() -> Iterator[LocalLlamaServer]:
    """llama-server with SmolLM2-135M on 127.0.0.1 (default ctx 8192 over 2 slots), one per test session."""
    with shared_llama_server() as server:
        yield server
