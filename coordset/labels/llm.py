"""LLM-assisted coordination labels through any OpenAI-compatible endpoint (opt-in: ``label.llm.enabled``).

Two label kinds (:mod:`coordset.labels.llm_prompt`), chosen per episode:

- **pairwise**: a two-agent episode whose agents answered the same turns in parallel (MT-Bench, arena) is
  judged twice, once with each agent shown as "A" (orders AB and BA). The preferred letter of each order is
  mapped back to a model name and the two orders are combined the way the imported judges are measured
  (:func:`coordset.verdicts.pair_verdict`): the same model (or tie) in both orders is consistent, anything else
  is ``inconsistent``.
- **group**: a conversation among agents (Who&When, LLM-Deliberation, ChatDev, debates, your own logs) is
  judged once as a whole: outcome, scores, agreement, and the failure attributed to one of its agents and one
  of its steps (Who&When's all-at-once protocol, without the ground-truth answer).

``model`` (top-level param) names one model or a list; every model labels every chosen episode on its own,
and :mod:`coordset.labels.llm_consensus` combines them. All requests of all models and kinds share one
budget (``max_calls``) and one pool of ``concurrency`` workers.

Every answer is written to the answer store (:mod:`coordset.labels.llm_cache`) the moment it arrives, keyed by
the request (model, prompt, schema: the whole body), so a killed run loses nothing, the next run pays only for
what is missing and a run with a warm store makes no call. The store is not a DVC output: it lives where no
DVC or git command run around the stage touches it (``.git/coordset/llm-answers`` of the main project by
default, also for ``dvc exp run --temp`` and queued experiments), see
:func:`coordset.labels.llm_cache.store_dir`. The rows returned depend only on the stored answers, never on
arrival order or on whether an answer was stored before this run or paid during it.

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
import re
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import openai
import pandas as pd

from coordset.errors import CoordsetError
from coordset.labels.llm_cache import Answer, AnswerCache, CacheEntry, request_key
from coordset.labels.llm_prompt import (
    AGREEMENT_LEVELS,
    ORDERS,
    RESPONSE_FORMAT,
    Cut,
    Step,
    Turn,
    Validation,
    cap_texts,
    group_messages,
    group_response_format,
    judge_messages,
    validate_answer,
    validate_group_answer,
)
from coordset.params import get, require_bool, require_float, require_int, require_names
from coordset.verdicts import INCONSISTENT, TIE, pair_verdict
from schemas import check
from schemas.llm_labels import LLM_LABELS

log = logging.getLogger(__name__)

CREDENTIAL_VARS = ("OPENAI_API_KEY", "OPENAI_BASE_URL")
RETRY_STATUS = frozenset({408, 409, 429})  # plus every 5xx

VALID, INVALID, UNANSWERED = "valid", "invalid", "unanswered"
PAIRWISE, GROUP = "pairwise", "group"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0"})


@dataclass(frozen=True)
class LlmSettings:
    """Settings of the LLM judge; the first seven come from ``label.llm`` in params.yaml."""

    enabled: bool = False
    concurrency: int = 8
    max_calls: int = 1000        # hard budget of HTTP calls per run, retries included
    max_retries: int = 5         # retries of one call after 408/409/429/5xx, timeout or dropped connection
    timeout_s: float = 60.0
    temperature: float = 0.0
    max_episodes: int | None = None   # None: every episode; else the first N by episode_id of each source/subset
    max_conversation_chars: int = 48_000  # longer conversations are cut (llm_prompt.cap_texts)
    # A cap on each answer: a JSON grammar allows endless whitespace, and a small model may loop in it until
    # its context is full (minutes per call on a CPU); a capped answer is cut, fails validation, is asked again.
    max_completion_tokens: int = 400
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
        max_conversation_chars=require_int(params, "label.llm.max_conversation_chars", low=1000),
        max_completion_tokens=require_int(params, "label.llm.max_completion_tokens", low=16),
    )


def llm_models(params: dict[str, Any]) -> tuple[str, ...]:
    """The top-level ``model``: one model name, or a list of distinct names (each labels on its own)."""
    return require_names(params, "model")


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
    models: int                # models that label (top-level ``model``)
    episodes: int              # episodes judged (after max_episodes), per model
    pairwise_episodes: int     # of which judged pairwise (two agents in parallel)
    group_episodes: int        # of which judged as a group conversation
    skipped_episodes: int      # parallel episodes with other than two agents: not judged
    cut_episodes: int          # episodes cut to label.llm.max_conversation_chars
    requests: int              # distinct requests needed (pairwise: two per episode and model; group: one)
    cache_hits: int            # requests already final in the cache when this run started
    calls_made: int            # HTTP calls this run, retries included (counted against max_calls)
    answers_received: int      # answers received this run, valid or not
    failed_requests: int       # requests given up this run after max_retries transport errors
    invalid_answers: int       # requests recorded invalid (every answer failed validation)
    unanswered: int            # requests still without a final answer (budget reached, failures)
    budget_exhausted: bool     # max_calls was reached and calls stopped
    prompt_tokens: int         # usage of this run's calls
    completion_tokens: int
    valid_episodes: int        # (episode, model) rows with a valid label
    invalid_episodes: int
    unanswered_episodes: int
    inconsistent_episodes: int  # valid pairwise rows whose two orders disagree

    @property
    def complete(self) -> bool:
        """Every request has a final answer (valid or recorded invalid)."""
        return self.unanswered == 0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "complete": self.complete}


@dataclass(frozen=True)
class LlmLabelResult:
    labels: pd.DataFrame   # one row per judged (episode, model), sorted by episode_id then model (LLM_LABELS)
    stats: LlmStats


@dataclass(frozen=True)
class _Request:
    key: str
    body: dict[str, Any]
    validate: Callable[[str | None], Validation]


@dataclass(frozen=True)
class _EpisodeRequests:
    episode_id: str
    model: str
    kind: str                       # PAIRWISE or GROUP
    keys: dict[str, str]            # pairwise: order -> request key; group: {"all": key}
    agents: tuple[str, ...]         # pairwise: the two agent models; group: the agents
    cut: Cut


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


def _capped_turns(turns: list[Turn], max_chars: int) -> tuple[list[Turn], Cut]:
    flat = [text for t in turns for text in (t.user, *t.replies)]
    capped, cut = cap_texts(flat, max_chars)
    return [Turn(user=capped[3 * i], replies=(capped[3 * i + 1], capped[3 * i + 2])) for i in range(len(turns))], cut


def episode_steps(messages: pd.DataFrame, episode_id: str) -> list[Step]:
    """The messages of one episode in order; step i is the message at position i (Who&When's step index)."""
    ordered = messages.sort_values("position", kind="stable")
    if ordered["position"].tolist() != list(range(len(ordered))):
        raise CoordsetError(f"LLM labels: episode {episode_id}: message positions are not 0..n-1, so steps "
                            "cannot be numbered by position")
    return [Step(speaker=str(sp), role=str(r), text=str(t))
            for sp, r, t in zip(ordered["speaker"], ordered["role"], ordered["text"], strict=True)]


def choose_episodes(episodes: pd.DataFrame, max_episodes: int | None) -> pd.DataFrame:
    """Every episode, or the first ``max_episodes`` by episode_id of each source and subset.

    Per source and subset, so a small run (``label.llm.max_episodes: 20``) covers every kind of episode,
    Who&When's hand-crafted logs as well as its algorithm-generated ones.
    """
    chosen = episodes.sort_values("episode_id", kind="stable")
    if max_episodes is None:
        return chosen
    keys = [chosen[c].fillna("") if c in chosen else pd.Series("", index=chosen.index) for c in ("source", "subset")]
    return chosen.groupby(keys, sort=False).head(max_episodes).sort_values("episode_id", kind="stable")


def _add(requests: dict[str, _Request], body: dict[str, Any], validate: Callable[[str | None], Validation]) -> str:
    key = request_key(body)
    requests.setdefault(key, _Request(key=key, body=body, validate=validate))
    return key


def build_requests(episodes: pd.DataFrame, messages: pd.DataFrame, *, models: tuple[str, ...],
                   settings: LlmSettings) -> tuple[list[_EpisodeRequests], dict[str, _Request], int]:
    """Every request of every chosen episode and model; also the count of skipped episodes."""
    for frame, name, needed in ((episodes, "episodes", ("episode_id", "agents", "agent_models", "parallel")),
                                (messages, "messages", ("episode_id", "turn", "position", "speaker", "role",
                                                        "agent_model", "text"))):
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise CoordsetError(f"LLM labels: {name} table lacks column(s) {missing}")
    chosen = choose_episodes(episodes, settings.max_episodes)
    by_episode = {eid: group for eid, group in messages.groupby("episode_id", sort=False)}
    empty = messages.iloc[0:0]
    plans: list[_EpisodeRequests] = []
    requests: dict[str, _Request] = {}
    skipped = 0
    for row in chosen.itertuples(index=False):
        episode_id, rows = str(row.episode_id), by_episode.get(row.episode_id, empty)
        if bool(row.parallel):
            agent_models = tuple(row.agent_models)
            if len(agent_models) != 2:
                skipped += 1  # a pairwise judge compares exactly two parallel answers
                continue
            turns, cut = _capped_turns(episode_turns(rows, agent_models), settings.max_conversation_chars)
            for model in models:
                keys = {order: _add(requests, {"model": model, "messages": judge_messages(turns, order),
                                               "temperature": settings.temperature,
                                               "max_completion_tokens": settings.max_completion_tokens,
                                               "response_format": RESPONSE_FORMAT}, validate_answer)
                        for order in ORDERS}
                plans.append(_EpisodeRequests(episode_id, model, PAIRWISE, keys, agent_models, cut))
            continue
        agents = tuple(str(a) for a in row.agents)
        steps = episode_steps(rows, episode_id)
        texts, cut = cap_texts([s.text for s in steps], settings.max_conversation_chars)
        steps = [Step(s.speaker, s.role, t or "") for s, t in zip(steps, texts, strict=True)]
        validate = _group_validator(agents, len(steps))
        for model in models:
            body = {"model": model, "messages": group_messages(agents, steps, cut),
                    "temperature": settings.temperature, "max_completion_tokens": settings.max_completion_tokens,
                    "response_format": group_response_format(agents, len(steps))}
            plans.append(_EpisodeRequests(episode_id, model, GROUP, {"all": _add(requests, body, validate)},
                                          agents, cut))
    return plans, requests, skipped


def _group_validator(agents: tuple[str, ...], n_steps: int) -> Callable[[str | None], Validation]:
    return lambda content: validate_group_answer(content, agents, n_steps)


def entry_state(entry: CacheEntry | None, answer_attempts: int,
                validate: Callable[[str | None], Validation] = validate_answer) -> tuple[str, dict[str, Any] | None]:
    """``(valid, answer)``, ``(invalid, None)`` or ``(unanswered, None)`` from the cached answers alone."""
    if entry is None:
        return UNANSWERED, None
    for answer in entry.answers:
        parsed, _ = validate(answer.content)
        if parsed is not None:
            return VALID, parsed
    return (INVALID, None) if len(entry.answers) >= answer_attempts else (UNANSWERED, None)


def endpoint_kind(base_url: str) -> str:
    """What served the answers, without address details: ``local`` for a loopback server, else its host."""
    host = urlsplit(base_url).hostname or "unknown"
    return "local" if host in LOOPBACK_HOSTS else host


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
        self.served_from = endpoint_kind(endpoint)
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
        while entry_state(self.cache.refresh(entry), self.settings.answer_attempts,
                          request.validate)[0] == UNANSWERED:
            response = self._call(request)
            if response is None:
                return
            answer = _answer_of(response, request.validate, self.served_from)
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
                    raise CoordsetError(_refusal_message(status, exc, self.endpoint, request,
                                                        self.settings.max_conversation_chars)) from None
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


# How OpenAI, vLLM and llama.cpp word a prompt longer than the model's context.
CONTEXT_EXCEEDED = re.compile(r"context (size|length|window)|maximum context|too many tokens", re.IGNORECASE)


def _refusal_message(status: int, exc: openai.APIStatusError, endpoint: str, request: _Request,
                     max_conversation_chars: int) -> str:
    detail = str(exc.message)
    key = os.environ.get("OPENAI_API_KEY")
    if key:
        detail = detail.replace(key, "***")  # some endpoints quote the key they rejected
    if status == 400 and CONTEXT_EXCEEDED.search(detail):
        hint = (f"a prompt is longer than the model's context: lower label.llm.max_conversation_chars (now "
                f"{max_conversation_chars}; text in scripts such as Korean takes about a token a character) or "
                f"serve the model with a longer context")
    else:
        hint = {
            401: "the endpoint rejected the API key: check OPENAI_API_KEY (and OPENAI_BASE_URL)",
            403: "the API key may not use this model or endpoint: check OPENAI_API_KEY and the top-level 'model'",
            404: f"model {request.body['model']!r} (top-level 'model' in params.yaml) or the endpoint path was "
                 "not found: check 'model' and OPENAI_BASE_URL (it usually ends in /v1)",
            429: "the account's quota is exhausted (insufficient_quota): add credit or use another key",
        }.get(status, "the endpoint refused the request; it must support chat completions with "
                      "response_format json_schema (structured outputs) for the top-level 'model'")
    return f"LLM labels: {endpoint} answered HTTP {status}: {hint} ({detail})"


def _answer_of(response: Any, validate: Callable[[str | None], Validation], served_from: str) -> Answer:
    choice = response.choices[0] if getattr(response, "choices", None) else None
    content = choice.message.content if choice is not None and choice.message is not None else None
    usage = getattr(response, "usage", None)
    _, problem = validate(content)
    served_model = getattr(response, "model", None)
    return Answer(content=content, finish_reason=getattr(choice, "finish_reason", None),
                  prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                  completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
                  valid=problem is None, problem=problem,
                  served_by=f"{served_from}:{served_model}" if served_model else served_from)


def _preferred_model(letter: str, order: str, models: tuple[str, ...]) -> str:
    """Map the letter of one order back to a model name (or tie)."""
    if letter == TIE:
        return TIE
    first, second = ORDERS[order]
    return models[first] if letter == "A" else models[second]


def _episode_row(plan: _EpisodeRequests, requests: dict[str, _Request], entries: dict[str, CacheEntry | None],
                 attempts: int) -> dict[str, Any]:
    states = {name: entry_state(entries[key], attempts, requests[key].validate) for name, key in plan.keys.items()}
    answers = [a for key in plan.keys.values() if entries[key] is not None for a in entries[key].answers]
    served = sorted({a.served_by for a in answers if a.valid and a.served_by})
    row: dict[str, Any] = {
        "episode_id": plan.episode_id, "model": plan.model, "kind": plan.kind, "valid": False,
        "success_score": math.nan, "agreement": None, "efficiency_score": math.nan, "reason": None,
        "preferred": None, "preferred_ab": None, "preferred_ba": None, "consistent": pd.NA,
        "outcome": None, "mistake_agent": None, "mistake_step": pd.NA,
        "message_char_cap": plan.cut.message_char_cap if plan.cut.message_char_cap is not None else pd.NA,
        "chars_cut": plan.cut.chars_cut, "served_by": None,
        "prompt_tokens": sum(a.prompt_tokens for a in answers),
        "completion_tokens": sum(a.completion_tokens for a in answers),
    }
    kinds = {state for state, _ in states.values()}
    if INVALID in kinds:  # asking again cannot make this episode labelled: it is final
        return {**row, "status": INVALID}
    if UNANSWERED in kinds:
        return {**row, "status": UNANSWERED}
    row = {**row, "status": VALID, "valid": True, "served_by": ", ".join(served) or None}
    if plan.kind == GROUP:
        answer = states["all"][1]
        assert answer is not None
        return {**row, **{f: answer[f] for f in ("success_score", "agreement", "efficiency_score", "reason",
                                                 "outcome", "mistake_agent", "mistake_step")},
                "success_score": float(answer["success_score"]), "efficiency_score": float(answer["efficiency_score"])}
    ab, ba = states["AB"][1], states["BA"][1]
    assert ab is not None and ba is not None
    model_a, model_b = plan.agents
    preferred = pair_verdict(ab["preferred"], ba["preferred"], model_a, model_b)
    return {
        **row,
        "success_score": (ab["success_score"] + ba["success_score"]) / 2,
        # The two orders may rate agreement differently: keep the more cautious (lower) level.
        "agreement": min(ab["agreement"], ba["agreement"], key=AGREEMENT_LEVELS.index),
        "efficiency_score": (ab["efficiency_score"] + ba["efficiency_score"]) / 2,
        "preferred": preferred,
        "preferred_ab": _preferred_model(ab["preferred"], "AB", plan.agents),
        "preferred_ba": _preferred_model(ba["preferred"], "BA", plan.agents),
        "consistent": preferred != INCONSISTENT,
        "reason": ab["reason"],
    }


def label_with_llm(episodes: pd.DataFrame, messages: pd.DataFrame, *, model: str | tuple[str, ...],
                   settings: LlmSettings, cache_dir: str | Path,
                   client_factory: Callable[[LlmSettings], Any] | None = None) -> LlmLabelResult:
    """Label every chosen episode with every model through the answer store at ``cache_dir``.

    See the module docstring; the label stage passes :func:`coordset.labels.llm_cache.store_dir`.

    ``episodes`` needs ``episode_id``, ``agents``, ``agent_models`` and ``parallel`` (``source`` and ``subset``
    where ``max_episodes`` is set); ``messages`` the normalized long form (``episode_id, turn, position,
    speaker, role, agent_model, text``). ``model`` is one model name or several. ``client_factory(settings)``
    returns an OpenAI-compatible client; by default the real ``openai.OpenAI`` from OPENAI_API_KEY /
    OPENAI_BASE_URL, which raises a CoordsetError before any work when the key is not set. Raises a
    CoordsetError when the endpoint refuses a request outright (bad key, unknown model, no structured
    outputs); answers received until then stay cached.
    """
    models = (model,) if isinstance(model, str) else tuple(model)
    if client_factory is None:
        require_credentials()
        client_factory = openai_client
    plans, requests, skipped = build_requests(episodes, messages, models=models, settings=settings)
    cache = AnswerCache(cache_dir)
    cache.remove_stale_temporaries()
    entries = {key: cache.load(key) for key in requests}
    open_keys = [key for key in _ordered_keys(plans)
                 if entry_state(entries[key], settings.answer_attempts, requests[key].validate)[0] == UNANSWERED]
    cache_hits = len(requests) - len(open_keys)
    run: _Run | None = None
    if open_keys:
        client = client_factory(settings)
        run = _Run(client, settings, cache, endpoint=str(getattr(client, "base_url", "the endpoint")))
        try:
            _run_all(run, [requests[k] for k in open_keys], entries, settings.concurrency)
        finally:
            close = getattr(client, "close", None)
            if callable(close):
                close()
        entries = {key: cache.load(key) for key in requests}  # rows come from what is on disk only
    labels = _labels_frame([_episode_row(plan, requests, entries, settings.answer_attempts) for plan in plans])
    states = [entry_state(entries[key], settings.answer_attempts, requests[key].validate)[0] for key in requests]
    status = labels["status"]
    first_model = [p for p in plans if p.model == models[0]]
    stats = LlmStats(
        models=len(models), episodes=len(first_model),
        pairwise_episodes=sum(p.kind == PAIRWISE for p in first_model),
        group_episodes=sum(p.kind == GROUP for p in first_model), skipped_episodes=skipped,
        cut_episodes=sum(p.cut.message_char_cap is not None for p in first_model),
        requests=len(requests), cache_hits=cache_hits,
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
    """Request keys in episode_id, model, then order (AB, BA): the order calls are started in."""
    seen: dict[str, None] = {}
    for plan in plans:
        for key in plan.keys.values():
            seen.setdefault(key, None)
    return list(seen)


def _run_all(run: _Run, todo: list[_Request], entries: dict[str, CacheEntry | None], concurrency: int) -> None:
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="llm-judge") as pool:
        futures = [pool.submit(run.resolve, req, entries[req.key], req.body["model"]) for req in todo]
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


LABEL_COLUMNS = ["episode_id", "model", "kind", "status", "valid", "success_score", "agreement",
                 "efficiency_score", "reason", "preferred", "preferred_ab", "preferred_ba", "consistent", "outcome",
                 "mistake_agent", "mistake_step", "message_char_cap", "chars_cut", "served_by", "prompt_tokens",
                 "completion_tokens"]
STRING_COLUMNS = ("episode_id", "model", "kind", "status", "agreement", "reason", "preferred", "preferred_ab",
                  "preferred_ba", "outcome", "mistake_agent", "served_by")


def _labels_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=LABEL_COLUMNS)
    # Missing text fields are nulls of the string columns (pandas' "str" dtype keeps NaN as null).
    frame = frame.astype({**dict.fromkeys(STRING_COLUMNS, "str"), "valid": bool, "success_score": float,
                          "efficiency_score": float, "consistent": "boolean", "mistake_step": "Int64",
                          "message_char_cap": "Int64", "chars_cut": "int64", "prompt_tokens": "int64",
                          "completion_tokens": "int64"})
    frame = frame.sort_values(["episode_id", "model"], kind="stable").reset_index(drop=True)
    return check(frame, LLM_LABELS, "LLM labels")


__all__ = ["GROUP", "PAIRWISE", "LlmLabelResult", "LlmSettings", "LlmStats", "label_with_llm", "llm_models",
           "llm_settings", "openai_client", "require_credentials"]
