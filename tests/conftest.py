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


@pytest.fixture
def endpoint(openai_server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> FakeOpenAI:
    """The test server as the endpoint of the real client, through the same env vars a user sets."""
    from tests.helpers import LLM_API_KEY

    openai_server.api_key = LLM_API_KEY
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", LLM_API_KEY)
    return openai_server
