"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testkit.openai_server import FakeOpenAI, serve_openai


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAI]:
    """A real OpenAI-compatible endpoint on 127.0.0.1 (testkit/openai_server.py), stopped after the test."""
    with serve_openai() as server:
        yield server
