"""The real openai client against a real model: llama.cpp's llama-server serving SmolLM2-135M-Instruct (Q4_1).

Marked ``llm_server`` (deselected by default; .ci/run runs it): the first run builds llama-server into the
user's cache (about 7 minutes on 2 cores), later runs start in seconds.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jsonschema
import openai
import pytest

from coordset.labels.local_server import LocalLlamaServer
from testkit.llama import (
    llama_server,  # noqa: F401  (the session fixture)
    llama_server_or_skip,
)

pytestmark = pytest.mark.llm_server

# Every free-text field is bounded: a 135M model may otherwise fill it until max_tokens.
SCHEMA = {
    "type": "object",
    "properties": {
        "preferred": {"type": "string", "enum": ["A", "B", "tie"]},
        "score": {"type": "integer", "minimum": 1, "maximum": 10},
        "reason": {"type": "string", "maxLength": 80},
    },
    "required": ["preferred", "score", "reason"],
    "additionalProperties": False,
}
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "verdict", "strict": True, "schema": SCHEMA}}


def judge(client: openai.OpenAI, model: str, question: str, a: str, b: str) -> openai.types.chat.ChatCompletion:
    return client.chat.completions.create(
        model=model, temperature=0.0, max_tokens=200, response_format=RESPONSE_FORMAT,
        messages=[
            {"role": "system", "content": "You judge which assistant answered better. Reply in JSON."},
            {"role": "user", "content": f"Question: {question}\n\nAssistant A: {a}\n\nAssistant B: {b}\n\n"
                                        "Which answer is better (A, B or tie), a score from 1 to 10 for the "
                                        "better one and a short reason?"},
        ])


def client_for(server: LocalLlamaServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="local", max_retries=0, timeout=120)


def check_answer(response: openai.types.chat.ChatCompletion) -> dict:
    choice = response.choices[0]
    assert choice.finish_reason == "stop", choice  # not cut at max_tokens
    answer = json.loads(choice.message.content)
    jsonschema.validate(answer, SCHEMA)
    return answer


def test_json_schema_answer_parses_and_reports_usage(llama_server):  # noqa: F811
    response = judge(client_for(llama_server), llama_server.model, "What is 2 + 2?", "4.",
                     "It is 5, because two and two make five.")
    check_answer(response)
    usage = response.usage
    assert usage is not None and usage.prompt_tokens > 40 and usage.completion_tokens > 5
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_concurrent_requests_each_get_a_valid_answer(llama_server):  # noqa: F811
    client = client_for(llama_server)
    questions = [("Name a primary colour.", "Red.", "Purple."),
                 ("What is the capital of France?", "Lyon.", "Paris.")]
    with ThreadPoolExecutor(max_workers=llama_server.parallel) as pool:
        responses = list(pool.map(lambda q: judge(client, llama_server.model, *q), questions))
    assert len({r.id for r in responses}) == len(questions)
    for response in responses:
        check_answer(response)


def server_processes(binary: Path, port: int) -> list[int]:
    """Pids whose command line is this llama-server binary on this port."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0] == os.fsencode(binary) and os.fsencode(str(port)) in argv:
            found.append(int(proc.name))
    return found


def test_no_server_process_is_left_after_the_context():
    with pytest.raises(RuntimeError, match="inside the block"):
        with llama_server_or_skip(ctx=1024, parallel=1) as server:
            pid, binary, port = server.pid, server.binary, server.port
            assert server_processes(binary, port) == [pid]
            response = client_for(server).chat.completions.create(
                model=server.model, messages=[{"role": "user", "content": "Say hi."}], max_tokens=4)
            assert response.usage.completion_tokens > 0
            raise RuntimeError("an error inside the block")
    assert server_processes(binary, port) == []  # the server and nothing else on its port
