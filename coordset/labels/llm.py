"""LLM-assisted coordination labels through any OpenAI-compatible endpoint (opt-in: ``label.llm.enabled``).

Every two-agent episode is judged twice, once with each agent shown as "A" (orders AB and BA), with a
structured-output request (:mod:`coordset.labels.llm_prompt`). The preferred letter of each order is mapped back
to a model name, and the two orders are combined the way the imported judges are measured
(:func:`coordset.verdicts.pair_verdict`): the same model (or tie) in both orders is consistent, anything
else is ``inconsistent``.

Every answer is written to the answer store (:mod:`coordset.labels.llm_cache`) the moment it arrives, keyed by
the request, so a killed run loses nothing, the next run pays only for what is missing and a run with a warm
store makes no call. The store is not a DVC output: it lives where no DVC or git command run around the stage
touches it (``.git/coordset/llm-answers`` of the main project by default, also for ``dvc exp run --temp`` and
queued experiments), see :func:`coordset.labels.llm_cache.store_dir`. The rows returned depend only on the
stored answers, never on arrival order or on whether an answer was stored before this run or paid during it.

Calls go through the real ``openai`` client with its own retries off: this module counts every HTTP call
against ``max_calls`` (checked under a lock before each call) and retries 408/409/429/5xx, timeouts and
dropped connections itself with exponential backoff, honouring ``Retry-After``. Answers that fail
validation are asked again up to ``answer_attempts`` times and are then recorded invalid (cached too, so
never paid twice), never as a label.
"""

from __future__ import annotations

import email.utils
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import openai
import pandas as pd

from coordset.errors import CoordsetError
from coordset.labels.llm_cache import Answer, AnswerCache, CacheEntry, request_key
from coordset.labels.llm_prompt import (
    AGREEMENT_LEVELS,
    ORDERS,
    RESPONSE_FORMAT,
    Turn,
    judge_messages,
    validate_answer,
)
from coordset.params import get, require_bool, require_float, require_int
from coordset.verdicts import INCONSISTENT, TIE, pair_verdict
from schemas import check
from schemas.llm_labels import LLM_LABELS

log = logging.getLogger(__name__)

CREDENTIAL_VARS = ("OPENAI_API_KEY", "OPENAI_BASE_URL")
RETRY_STATUS = frozenset({408, 409, 429})  # plus every 5xx

VALID, INVALID, UNANSWERED = "valid", "invalid", "unanswered"


@dataclass(frozen=True)
class LlmSettings:
    """Settings of the LLM judge; the first seven come from ``label.llm`` in params.yaml."""

    enabled: bool = False
    concurrency: int = 8
    max_calls: int = 1000        # hard budget of HTTP calls per run, retries included
    max_retries: int = 5         # retries of one call after 408/409/429/5xx, timeout or dropped connection
    timeout_s: float = 60.0
    temperature: float = 0.0
    max_episodes: int | None = None   # None: every episode; else the first N by episode_id
    answer_attempts: int = 2     # answers asked for one request before it is recorded invalid
    backoff_s: float = 1.0       # first retry delay; doubles per retry (with jitter)
    max_backoff_s: float = 60.0  # cap on any wait, Retry-After included


def llm_settings(params: dict[str, Any]) -> LlmSettings:
    """Read and check ``label.llm`` from params; a bad value raises a ParamError naming its key."""
    max_episodes = get(params, "label.llm.max_episodes")
    return LlmSettings(
        enabled=require_bool(params, "label.llm.enabled"),
        concurrency=require_int(params, "label.llm.concurrency", low=1, high=256),
        max_calls=require_int(params, "label.llm.max_calls", low=0),
        max_retries=require_int(params, "label.llm.max_retries", low=0, high=100),
        timeout_s=require_float(params, "label.llm.timeout_s", low=0.001),
        temperature=require_float(params, "label.llm.temperature", low=0.0, high=2.0),
        max_episodes=None if max_episodes is None else require_int(params, "label.llm.max_episodes", low=1),
    )


def require_credentials(environ: Mapping[str, str] | None = None) -> None:
    """Raise before any work when no API key is set; call this as soon as ``label.llm.enabled`` is true."""
    environ = os.environ if environ is None else environ
    if not environ.get("OPENAI_API_KEY"):
        raise CoordsetError(
            "label.llm.enabled is true but OPENAI_API_KEY is not set: export OPENAI_API_KEY (any non-empty "
            "value for a local vLLM or Ollama server without auth) and, for an endpoint other than "
            "api.openai.com, OPENAI_BASE_URL (e.g. https://openrouter.ai/api/v1, http://localhost:8000/v1, "
            "http://localhost:11434/v1); or set label.llm.enabled: false in params.yaml")


def openai_client(settings: LlmSettings) -> openai.OpenAI:
    """The real client from OPENAI_API_KEY / OPENAI_BASE_URL, with its own retries off (we count calls)."""
    require_credentials()
    return openai.OpenAI(max_retries=0, timeout=settings.timeout_s)


@dataclass(frozen=True)
class LlmStats:
    episodes: int              # two-agent episodes judged (after max_episodes)
    skipped_episodes: int      # episodes with other than two agents: not judged
    requests: int              # distinct requests needed (two per episode, one per order)
    cache_hits: int            # requests already final in the cache when this run started
    calls_made: int            # HTTP calls this run, retries included (counted against max_calls)
    answers_received: int      # answers received this run, valid or not
    failed_requests: int       # requests given up this run after max_retries transport errors
    invalid_answers: int       # requests recorded invalid (every answer failed validation)
    unanswered: int            # requests still without a final answer (budget reached, failures)
    budget_exhausted: bool     # max_calls was reached and calls stopped
    prompt_tokens: int         # usage of this run's calls
    completion_tokens: int
    valid_episodes: int
    invalid_episodes: int
    unanswered_episodes: int
    inconsistent_episodes: int  # valid episodes whose two orders disagree

    @property
    def complete(self) -> bool:
        """Every request has a final answer (valid or recorded invalid)."""
        return self.unanswered == 0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "complete": self.complete}


@dataclass(frozen=True)
class LlmLabelResult:
    labels: pd.DataFrame   # one row per judged episode, sorted by episode_id (schema LLM_LABELS)
    stats: LlmStats


@dataclass(frozen=True)
class _Request:
    key: str
    body: dict[str, Any]


@dataclass(frozen=True)
class _EpisodeRequests:
    episode_id: str
    models: tuple[str, str]
    keys: dict[str, str]   # order -> request key


def episode_turns(messages: pd.DataFrame, agent_models: tuple[str, ...]) -> list[Turn]:
    """Turns of one episode (messages of that episode only) with replies in agent_models order."""
    turns: list[Turn] = []
    for _, group in messages.sort_values("position", kind="stable").groupby("turn", sort=True):
        users = [t for t in group.loc[group["role"] == "user", "text"]]
        replies = []
        for model in agent_models:
            texts = list(group.loc[(group["role"] == "agent") & (group["agent_model"] == model), "text"])
            replies.append("\n\n".join(texts) if texts else None)
        turns.append(Turn(user="\n\n".join(users) if users else None, replies=(replies[0], replies[1])))
    return turns


def build_requests(episodes: pd.DataFrame, messages: pd.DataFrame, *, model: str, settings: LlmSettings
                   ) -> tuple[list[_EpisodeRequests], dict[str, _Request], int]:
    """Requests for both orders of every two-agent episode; also the count of skipped episodes."""
    for frame, name, needed in ((episodes, "episodes", ("episode_id", "agent_models")),
                                (messages, "messages", ("episode_id", "turn", "position", "role",
                                                        "agent_model", "text"))):
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise CoordsetError(f"LLM labels: {name} table lacks column(s) {missing}")
    chosen = episodes.sort_values("episode_id", kind="stable")
    if settings.max_episodes is not None:
        chosen = chosen.head(settings.max_episodes)
    by_episode = {eid: group for eid, group in messages.groupby("episode_id", sort=False)}
    empty = messages.iloc[0:0]
    plans: list[_EpisodeRequests] = []
    requests: dict[str, _Request] = {}
    skipped = 0
    for episode_id, agent_models in zip(chosen["episode_id"], chosen["agent_models"], strict=True):
        models = tuple(agent_models)
        if len(models) != 2:
            skipped += 1  # a pairwise judge compares exactly two agents
            continue
        turns = episode_turns(by_episode.get(episode_id, empty), models)
        keys = {}
        for order in ORDERS:
            body = {"model": model, "messages": judge_messages(turns, order),
                    "temperature": settings.temperature, "response_format": RESPONSE_FORMAT}
            key = request_key(body)
            requests.setdefault(key, _Request(key=key, body=body))
            keys[order] = key
        plans.append(_EpisodeRequests(episode_id=str(episode_id), models=(models[0], models[1]), keys=keys))
    return plans, requests, skipped


def entry_state(entry: CacheEntry | None, answer_attempts: int) -> tuple[str, dict[str, Any] | None]:
    """``(valid, answer)``, ``(invalid, None)`` or ``(unanswered, None)`` from the cached answers alone."""
    if entry is None:
        return UNANSWERED, None
    for answer in entry.answers:
        parsed, _ = validate_answer(answer.content)
        if parsed is not None:
            return VALID, parsed
    return (INVALID, None) if len(entry.answers) >= answer_attempts else (UNANSWERED, None)


def retry_after_s(headers: Mapping[str, str] | None) -> float | None:
    """Seconds asked for by ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date); None if absent."""
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            parsed = email.utils.parsedate_tz(value) if name == "retry-after" else None
            if parsed is None:
                continue
            seconds = email.utils.mktime_tz(parsed) - time.time()
        if math.isfinite(seconds):
            return max(seconds, 0.0)
    return None


class _Run:
    """One labelling run: the shared client, the call budget and the counters, guarded by a lock."""

    def __init__(self, client: Any, settings: LlmSettings, cache: AnswerCache, endpoint: str) -> None:
        self.client = client
        self.settings = settings
        self.cache = cache
        self.endpoint = endpoint
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.calls = 0
        self.budget_exhausted = False
        self.answers_received = 0
        self.failed_requests = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def take_call(self) -> bool:
        """Reserve one call of the budget; False (and calls stop) once max_calls is reached."""
        with self.lock:
            if self.calls >= self.settings.max_calls:
                self.budget_exhausted = True
                return False
            self.calls += 1
            return True

    def resolve(self, request: _Request, entry: CacheEntry | None, model: str) -> None:
        """Ask until the request has a valid answer or ``answer_attempts`` invalid ones, caching each."""
        entry = entry or CacheEntry(key=request.key, model=model)
        # Re-read before paying: another writer of the store (a queued experiment running beside this one)
        # may have stored an answer for this key since this run started.
        while entry_state(self.cache.refresh(entry), self.settings.answer_attempts)[0] == UNANSWERED:
            response = self._call(request)
            if response is None:
                return
            answer = _answer_of(response)
            entry.answers.append(answer)
            self.cache.store(entry)  # as soon as it arrives, atomically: a kill after this loses nothing
            with self.lock:
                self.answers_received += 1
                self.prompt_tokens += answer.prompt_tokens
                self.completion_tokens += answer.completion_tokens
            if not answer.valid:
                log.warning("invalid answer for request %s: %s", request.key[:12], answer.problem)

    def _call(self, request: _Request) -> Any | None:
        """One answer, retrying transient failures; None when stopped, out of budget or given up."""
        for attempt in range(self.settings.max_retries + 1):
            if self.stop.is_set() or not self.take_call():
                return None
            try:
                return self.client.chat.completions.create(**request.body, timeout=self.settings.timeout_s)
            except openai.APIStatusError as exc:
                status = exc.status_code
                # An exhausted quota is a 429 too, but waiting does not refill it.
                quota = status == 429 and getattr(exc, "code", None) == "insufficient_quota"
                if quota or (status not in RETRY_STATUS and status < 500):
                    self.stop.set()  # before raising, so no worker starts another call meanwhile
                    raise CoordsetError(_refusal_message(status, exc, self.endpoint, request)) from None
                asked = retry_after_s(exc.response.headers)
                problem = f"HTTP {status}"
            except openai.APITimeoutError:
                asked, problem = None, f"timeout after {self.settings.timeout_s} s"
            except openai.APIConnectionError as exc:
                asked, problem = None, f"connection error ({exc.__cause__ or exc})"
            except openai.APIError as exc:  # e.g. a 200 whose body is not a chat completion
                asked, problem = None, f"bad response ({exc})"
            if attempt == self.settings.max_retries:
                log.warning("giving up request %s after %d calls: %s", request.key[:12], attempt + 1, problem)
                break
            backoff = self.settings.backoff_s * 2 ** attempt * (0.75 + 0.25 * random.random())
            delay = min(asked if asked is not None else backoff, self.settings.max_backoff_s)
            log.info("request %s: %s; retrying in %.2f s", request.key[:12], problem, delay)
            self.stop.wait(delay)
        with self.lock:
            self.failed_requests += 1
        return None


def _refusal_message(status: int, exc: openai.APIStatusError, endpoint: str, request: _Request) -> str:
    hint = {
        401: "the endpoint rejected the API key: check OPENAI_API_KEY (and OPENAI_BASE_URL)",
        403: "the API key may not use this model or endpoint: check OPENAI_API_KEY and the top-level 'model'",
        404: f"model {request.body['model']!r} (top-level 'model' in params.yaml) or the endpoint path was "
             "not found: check 'model' and OPENAI_BASE_URL (it usually ends in /v1)",
        429: "the account's quota is exhausted (insufficient_quota): add credit or use another key",
    }.get(status, "the endpoint refused the request; it must support chat completions with "
                  "response_format json_schema (structured outputs) for the top-level 'model'")
    detail = str(exc.message)
    key = os.environ.get("OPENAI_API_KEY")
    if key:
        detail = detail.replace(key, "***")  # some endpoints quote the key they rejected
    return f"LLM labels: {endpoint} answered HTTP {status}: {hint} ({detail})"


def _answer_of(response: Any) -> Answer:
    choice = response.choices[0] if getattr(response, "choices", None) else None
    content = choice.message.content if choice is not None and choice.message is not None else None
    usage = getattr(response, "usage", None)
    _, problem = validate_answer(content)
    return Answer(content=content, finish_reason=getattr(choice, "finish_reason", None),
                  prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                  completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
                  valid=problem is None, problem=problem)


def _preferred_model(letter: str, order: str, models: tuple[str, str]) -> str:
    """Map the letter of one order back to a model name (or tie)."""
    if letter == TIE:
        return TIE
    first, second = ORDERS[order]
    return models[first] if letter == "A" else models[second]


def _episode_row(plan: _EpisodeRequests, entries: dict[str, CacheEntry | None], attempts: int
                 ) -> dict[str, Any]:
    states = {order: entry_state(entries[key], attempts) for order, key in plan.keys.items()}
    tokens = [a for key in plan.keys.values() if entries[key] is not None for a in entries[key].answers]
    row: dict[str, Any] = {
        "episode_id": plan.episode_id, "valid": False, "success_score": math.nan, "agreement": None,
        "efficiency_score": math.nan, "preferred": None, "preferred_ab": None, "preferred_ba": None,
        "consistent": pd.NA, "reason": None,
        "prompt_tokens": sum(a.prompt_tokens for a in tokens),
        "completion_tokens": sum(a.completion_tokens for a in tokens),
    }
    kinds = {state for state, _ in states.values()}
    if INVALID in kinds:  # asking again cannot make this episode labelled: it is final
        return {**row, "status": INVALID}
    if UNANSWERED in kinds:
        return {**row, "status": UNANSWERED}
    ab, ba = states["AB"][1], states["BA"][1]
    assert ab is not None and ba is not None
    model_a, model_b = plan.models
    preferred = pair_verdict(ab["preferred"], ba["preferred"], model_a, model_b)
    return {
        **row, "status": VALID, "valid": True,
        "success_score": (ab["success_score"] + ba["success_score"]) / 2,
        # The two orders may rate agreement differently: keep the more cautious (lower) level.
        "agreement": min(ab["agreement"], ba["agreement"], key=AGREEMENT_LEVELS.index),
        "efficiency_score": (ab["efficiency_score"] + ba["efficiency_score"]) / 2,
        "preferred": preferred,
        "preferred_ab": _preferred_model(ab["preferred"], "AB", plan.models),
        "preferred_ba": _preferred_model(ba["preferred"], "BA", plan.models),
        "consistent": preferred != INCONSISTENT,
        "reason": ab["reason"],
    }


def label_with_llm(episodes: pd.DataFrame, messages: pd.DataFrame, *, model: str, settings: LlmSettings,
                   cache_dir: str | Path, client_factory: Callable[[LlmSettings], Any] | None = None
                   ) -> LlmLabelResult:
    """Judge every two-agent episode in both orders through the answer store at ``cache_dir``.

    See the module docstring; the label stage passes :func:`coordset.labels.llm_cache.store_dir`.

    ``episodes`` needs ``episode_id`` and ``agent_models``; ``messages`` the normalized long form
    (``episode_id, turn, position, role, agent_model, text``). ``client_factory(settings)`` returns an
    OpenAI-compatible client; by default the real ``openai.OpenAI`` from OPENAI_API_KEY / OPENAI_BASE_URL,
    which raises a CoordsetError before any work when the key is not set. Raises a CoordsetError when the
    endpoint refuses a request outright (bad key, unknown model, no structured outputs); answers received
    until then stay cached.
    """
    if client_factory is None:
        require_credentials()
        client_factory = openai_client
    plans, requests, skipped = build_requests(episodes, messages, model=model, settings=settings)
    cache = AnswerCache(cache_dir)
    cache.remove_stale_temporaries()
    entries = {key: cache.load(key) for key in requests}
    open_keys = [key for key in _ordered_keys(plans)
                 if entry_state(entries[key], settings.answer_attempts)[0] == UNANSWERED]
    cache_hits = len(requests) - len(open_keys)
    run: _Run | None = None
    if open_keys:
        client = client_factory(settings)
        run = _Run(client, settings, cache, endpoint=str(getattr(client, "base_url", "the endpoint")))
        try:
            _run_all(run, [requests[k] for k in open_keys], entries, model, settings.concurrency)
        finally:
            close = getattr(client, "close", None)
            if callable(close):
                close()
        entries = {key: cache.load(key) for key in requests}  # rows come from what is on disk only
    rows = [_episode_row(plan, entries, settings.answer_attempts) for plan in plans]
    labels = _labels_frame(rows)
    states = [entry_state(entries[key], settings.answer_attempts)[0] for key in requests]
    status = labels["status"]
    stats = LlmStats(
        episodes=len(plans), skipped_episodes=skipped, requests=len(requests), cache_hits=cache_hits,
        calls_made=run.calls if run else 0, answers_received=run.answers_received if run else 0,
        failed_requests=run.failed_requests if run else 0, invalid_answers=states.count(INVALID),
        unanswered=states.count(UNANSWERED), budget_exhausted=run.budget_exhausted if run else False,
        prompt_tokens=run.prompt_tokens if run else 0, completion_tokens=run.completion_tokens if run else 0,
        valid_episodes=int((status == VALID).sum()), invalid_episodes=int((status == INVALID).sum()),
        unanswered_episodes=int((status == UNANSWERED).sum()),
        inconsistent_episodes=int((labels["preferred"] == INCONSISTENT).sum()),
    )
    return LlmLabelResult(labels=labels, stats=stats)


def _ordered_keys(plans: list[_EpisodeRequests]) -> list[str]:
    """Request keys in episode_id then order (AB, BA): the order calls are started in."""
    seen: dict[str, None] = {}
    for plan in plans:
        for order in ORDERS:
            seen.setdefault(plan.keys[order], None)
    return list(seen)


def _run_all(run: _Run, todo: list[_Request], entries: dict[str, CacheEntry | None], model: str,
             concurrency: int) -> None:
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="llm-judge") as pool:
        futures = [pool.submit(run.resolve, req, entries[req.key], model) for req in todo]
        try:
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in futures if f.done() and f.exception() is not None]
            if failed:
                raise failed[0].exception()  # type: ignore[misc]
        except BaseException:
            # A refused request or Ctrl-C: stop every worker promptly; what arrived is already cached.
            run.stop.set()
            for future in futures:
                future.cancel()
            raise


LABEL_COLUMNS = ["episode_id", "status", "valid", "success_score", "agreement", "efficiency_score",
                 "preferred", "preferred_ab", "preferred_ba", "consistent", "reason", "prompt_tokens",
                 "completion_tokens"]


def _labels_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=LABEL_COLUMNS)
    # Missing text fields are nulls of the string columns (pandas' "str" dtype keeps NaN as null).
    frame = frame.astype({"episode_id": "str", "status": "str", "valid": bool, "success_score": float,
                          "agreement": "str", "efficiency_score": float, "preferred": "str",
                          "preferred_ab": "str", "preferred_ba": "str", "consistent": "boolean",
                          "reason": "str", "prompt_tokens": "int64", "completion_tokens": "int64"})
    frame = frame.sort_values("episode_id", kind="stable").reset_index(drop=True)
    return check(frame, LLM_LABELS, "LLM labels")


__all__ = ["LlmLabelResult", "LlmSettings", "LlmStats", "label_with_llm", "llm_settings", "openai_client",
           "require_credentials"]
