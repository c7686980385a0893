"""ChatDev 1.0: logs of LLM "software company" runs (CEO, CPO, CTO, Programmer, Code Reviewer, Tester...).

Each ``WareHouse/<project>/*.log`` is one episode (``group_id`` = the project folder). A log is a
sequence of records ``[YYYY-DD-MM HH:MM:SS LEVEL] ...`` (year-DAY-month: checked against every run's
folder timestamp; no zone is logged, so the times are read as UTC). The records kept as messages:

- the customer's task (the log's ``**[Preprocessing]** task_prompt``; ``meta.txt``'s ``Task`` where the
  log has none) opens the episode as the ``user``;
- ``<Role>: **<Assistant><-><User> on : <Phase>, turn N**`` records: what that role's model replied, said
  to the other role of the phase. The bracketed system prompt the log prints first (the *other* role's)
  is framework text, cut from the message (it goes into the prompt, below); the reply after it is the
  message;
- ``Prompt Engineer: <INFO> ...``: the model's rewrite of the task (runs with task self-improvement);
- ``**[User Provided Comments]**``: a human's feedback in human-agent-interaction runs (``user``).

Not messages, being framework text that no agent said: ``[Start Chat]`` phase prompts (ChatDev's
templates, filled with the task, ideas and code, that open each phase in the user role's name) and system
prompts (both only go into the prompts, below), ``[Seminar Conclusion]`` (a copy of a reply), parameter
tables, code/software/git/execution info, rate-limit and HTTP lines, and Tetris's custom ``[Coding_wait]``
block (sub-logs of competing teams, whose embedded lines carry year-month-day times). ``[Test Reports]``
(the framework running the code) become ``test_report`` turn events: value 1.0 when it reports "The
software run successfully without errors", else 0.0 (often a framework failure such as ``os.setsid``
missing on Windows, not a bug in the code).

``turn`` counts ChatDev's phase steps in order: each (phase chat, ``turn N``) pair is one step, so a
phase's reply and the other role's answer in the same ChatDev turn share it; the task opens step 1 and a
human comment opens the step that follows it.

Usage: ChatDev logs ``**[OpenAI_Usage_Info Receive]**`` (prompt/completion/total tokens) when an API call
returns, and logs the reply after both calls of a ChatDev turn are done, so within one phase chat the
k-th usage block belongs to the k-th reply (first the assistant role's, then the user role's). Blocks
left when a new chat starts (none in the mirrored runs) stay unmatched.

Prompts and billing (``logged_prompt``): ChatDev logs no call's prompt verbatim, so each agent message's
``prompt`` is *rebuilt from the log*: the chat messages ChatDev 1.0's chat chain sent for that call. Each
phase chat (one ``[Start Chat]``) starts two fresh agents, and a call sends what the calling agent holds:

- its own system prompt (the role prompt filled with the task): the log prints the assistant role's in
  ``[Start Chat]`` and each role's in brackets before the *other* role's replies; early (August 2023)
  logs print ``System: SystemMessage(...)`` records before the chat instead;
- the phase prompt (``[Start Chat]``'s text), sent to the assistant role as ``user`` and kept by the user
  role as its own ``assistant`` message;
- the replies of this phase chat so far: the agent's own as ``assistant``, the other role's as ``user``.

Nothing else: no earlier phase's messages, no ``[Seminar Conclusion]`` (later phases see conclusions only
through the task, ideas and code the phase prompt is filled with), no memory. When a request fails,
ChatDev retries by re-running ``ChatAgent.step``, which stores its input again: a call with n
``[OpenAI_Usage_Info Send]`` blocks sends (and keeps for the rest of the chat) n copies of its input.
Logs without Send blocks do not show retries, so a retried call there is rebuilt with one copy. Trailing
newlines of a logged text cannot be told from the log's blank-line padding and are dropped.

The prompt text is the messages in order, each as ``[<chat role>]`` on a line of its own and then its
content, parted by blank lines; enrich counts it as one message. The real call had k messages, each
costing 3 chat-format tokens plus its role; the role lines and blank lines (2 to 4 tokens a message) stand
where those tokens were, so counting the text as one message comes within a token or two of counting the
k messages (up to 6 tokens under it for the few retried calls of 4 to 6 messages). Against the
usage ChatDev logged (the 1,361 mirrored calls that have it), the k messages counted as OpenAI does give
exactly the logged ``prompt_tokens`` for 1,331 calls and 1 token less for 22 (a text that really ended in
a newline); the one-text count is a median 1 token (0.06%) above the logged count, p90 0.16%. The 8 calls
left are retried calls in logs without Send blocks, billed 1-4 copies of their input short.

Agents are the roles that speak, named by role, with the model of the phases they spoke in (the parameter
tables' ``ModelType``, mapped to ChatDev's own API model names; ``None`` where the log says ``None``).
The ``category`` is the run's main model. ChatDev has no success label: the outcome is ``unknown``.
Unparseable logs are counted through ``skips``: empty logs, runs with no agent message, the pre-release
"AgentTech" format (``[0] AI Assistant (Role):`` lines), copies of another log of the same project, and
projects with no log.
"""

from __future__ import annotations

import ast
import calendar
import datetime as dt
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from coordset.errors import CoordsetError
from coordset.records import BadRecord, SkipLog
from coordset.sources.episode import Agent, Episode, Message, Outcome, TurnEvent
from coordset.sources.registry import Limit, Source, SourceData, limit

NAME = "chatdev"
WAREHOUSE = "WareHouse"

# ChatDev's camel/typing.py ModelType values: the model names it sends to the API.
MODEL_NAMES = {
    "GPT_3_5_TURBO": "gpt-3.5-turbo-16k-0613",
    "GPT_3_5_TURBO_NEW": "gpt-3.5-turbo-16k",
    "GPT_4": "gpt-4",
    "GPT_4_32k": "gpt-4-32k",
    "GPT_4_TURBO": "gpt-4-turbo",
    "GPT_4_TURBO_V": "gpt-4-turbo",
    "GPT_4o": "gpt-4o",
}

RECORD = re.compile(r"^\[(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2}) ([A-Z]+)\] ?(.*)$")
MESSAGE = re.compile(r"^(?P<speaker>[^:*\n]+?): \*\*(?P<assistant>[^*\n]+?)<->(?P<user>[^*\n]+?) on : "
                     r"(?P<phase>[^,*\n]+), turn (?P<n>\d+)\*\*\s*$")
START_CHAT = re.compile(r"^[^:*\n]+: \*\*\[Start Chat\]\*\*\s*$")
USAGE = re.compile(r"^\*\*\[OpenAI_Usage_Info Receive\]\*\*\s*$")
SEND = re.compile(r"^\*\*\[OpenAI_Usage_Info Send\]\*\*\s*$")
# Early (August 2023) logs print each agent's system message as a Python repr before the chat starts.
SYSTEM_MESSAGE = re.compile(
    r"^System: SystemMessage\(role_name=.*?, role='system', content=(?P<content>'.*'|\".*\")\)$", re.S)
PROMPT_ENGINEER = "Prompt Engineer"
COMMENTS = re.compile(r"^\*\*\[User Provided Comments\]\*\*\s*$")
COMMENT_PREFIX = re.compile(r"^\s*In the #\d+ of total \d+ comments:\s*\n")
TEST_REPORTS = re.compile(r"^\*\*\[Test Reports\]\*\*:?\s*$")
CODING_WAIT = re.compile(r"^\*\*\[Coding_wait\]\*\*")
TABLE = re.compile(r"^System: \*\*\[(chatting|RolePlaying)\]\*\*\s*$")
MODEL_ROW = re.compile(r"^\| \*\*model_type\*\* \| (?P<model>\S+) \|\s*$", re.M)
TASK_ROW = re.compile(r"^\*\*task_prompt\*\*: (?P<task>.*)$", re.M)
LEGACY = re.compile(r"\[\d+\] AI (Assistant|User) \(")
USAGE_FIELDS = ("prompt_tokens", "completion_tokens")
TEST_PASS = "The software run successfully without errors"
META_KEYS = ("Task", "Config", "Roster", "Modality", "Ideas", "Language", "Code_Version", "Proposed_images",
             "Porposed_images", "Incorporated_images")


@dataclass
class _Record:
    line: int  # 1-based line of the record's header
    tstamp: float
    head: str  # the header line after "] "
    body: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.body)


@dataclass
class _Usage:
    line: int
    prompt_tokens: int
    completion_tokens: int
    attempts: int = 1  # the API requests the log shows for this call (its Send blocks), at least 1


@dataclass
class _Chat:
    """One phase chat as ChatDev's two agents hold it: side 0 is the assistant role, side 1 the user role.

    ``stored[s]`` is what agent ``s`` keeps after its system message, as (chat role, content) pairs;
    ``inputs[s]`` the message it is sent next. ChatDev's ``init_chat`` sends the phase prompt to the
    assistant and stores it in the user agent as that agent's own (``assistant``) message.
    """

    system: list[str | None]
    bracketed: bool  # the log prints each reply after the other side's system prompt in brackets
    stored: tuple[list[tuple[str, str]], list[tuple[str, str]]]
    inputs: list[str | None]
    last_side: int = 1

    @classmethod
    def start(cls, record: _Record, system_messages: list[str]) -> _Chat:
        """A chat from its ``[Start Chat]`` record: ``[<assistant's system prompt>]``, a blank line, the phase
        prompt; early logs print the system messages (the assistant's, then the user's) before it, no brackets."""
        system, phase = _bracketed(_content(record))
        known = [system, None] if system is not None else [*system_messages, None, None][:2]
        return cls(known, system is not None, ([], [("assistant", phase)]), [phase, None])

    def side(self, speaker: str, assistant: str, user: str) -> int:
        if assistant != user:
            return 0 if speaker == assistant else 1
        return 1 - self.last_side  # a role talking to itself: the sides alternate, the assistant first

    def call(self, side: int, content: str, attempts: int) -> str:
        """The prompt of the call that produced this reply (``content``: the record's text as logged)."""
        reply = content
        if self.bracketed:
            other, reply = _bracketed(content, known=self.system[1 - side])
            if other is not None:
                self.system[1 - side] = other
        stored = self.stored[side]
        if self.inputs[side] is not None:
            # ChatDev's ChatAgent.step stores its input before each request, and a failed request is retried
            # by re-running step: a retried call sends (and keeps) one copy of the input per attempt.
            stored.extend([("user", self.inputs[side])] * attempts)
            self.inputs[side] = None
        sent = ([("system", self.system[side])] if self.system[side] is not None else []) + stored
        stored.append(("assistant", reply))
        self.inputs[1 - side] = reply
        self.last_side = side
        return render_prompt(sent)


@dataclass
class _Parsed:
    """One log read into messages (task first), events and the usage bookkeeping."""

    messages: list[Message]
    events: list[TurnEvent]
    agent_models: dict[str, list[str]]  # speaker -> the models of the chats it spoke in
    models: list[str]  # the model of every chat table that named one
    unmatched_usage: int = 0
    messages_with_usage: int = 0


def _tstamp(match: re.Match[str]) -> float | None:
    year, day, month, hour, minute, second = (int(g) for g in match.groups()[:6])
    try:
        when = dt.datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None
    return float(calendar.timegm(when.timetuple()))


def _records(lines: list[str], rel: str) -> list[_Record]:
    """Split a log into records; a line starts one only where its time is a valid year-day-month."""
    records: list[_Record] = []
    for lineno, line in enumerate(lines, 1):
        match = RECORD.match(line)
        if match:
            tstamp = _tstamp(match)
            if tstamp is not None:
                records.append(_Record(lineno, tstamp, match.group(8)))
                continue
            # Tetris's [Coding_wait] block copies sub-log lines written year-month-day: they are its text.
            if not (records and CODING_WAIT.match(records[-1].head)):
                raise BadRecord(f"{rel}, line {lineno}, timestamp",
                                f"{line[:21]!r} is not a valid [year-day-month time]", "bad_timestamp")
        if records:
            records[-1].body.append(line)
    return records


def _reply(record: _Record) -> str:
    """The reply in a message record: the text after the bracketed system prompt the log prints first."""
    text = record.text.lstrip("\n")
    if text.startswith("["):
        end = text.find("]\n\n")
        if end < 0 and text.rstrip().endswith("]"):
            return ""  # the system prompt and nothing after it
        if end >= 0:
            text = text[end + 3:]
    return text.strip()


def _content(record: _Record) -> str:
    """What ChatDev wrote after ``<role>: <header>``: the log adds a line break after the header and blank-line
    padding at the end (which a text's own trailing newlines cannot be told from: they go too)."""
    text = record.text
    return text.removeprefix("\n").rstrip("\n")


def _bracketed(content: str, known: str | None = None) -> tuple[str | None, str]:
    """Split ``[<system prompt>]``, a blank line and a text into the two (None and all without brackets)."""
    if known is not None and content.startswith(f"[{known}]\n\n"):
        return known, content[len(known) + 4:]
    if content.startswith("["):
        end = content.find("]\n\n")
        if end >= 0:
            return content[1:end], content[end + 3:]
        if content.rstrip().endswith("]"):
            return content.rstrip()[1:-1], ""
    return None, content


def _system_message(record: _Record) -> str | None:
    found = SYSTEM_MESSAGE.match("\n".join([record.head, *record.body]).strip())
    if not found:
        return None
    try:
        value = ast.literal_eval(found.group("content"))
    except (ValueError, SyntaxError):
        return None
    return value if isinstance(value, str) else None


def render_prompt(messages: list[tuple[str, str]]) -> str:
    """A call's chat messages as one text: each message under its chat role, ``[system]``, ``[user]`` or
    ``[assistant]``, on a line of its own, messages parted by a blank line."""
    return "\n\n".join(f"[{role}]\n{content}" for role, content in messages)


def _usage(record: _Record, rel: str, attempts: int = 1) -> _Usage:
    values: dict[str, int] = {}
    for key in USAGE_FIELDS:
        found = re.search(rf"^{key}: *(.*?)\s*$", record.text, re.M)
        where = f"{rel}, line {record.line}, usage block field '{key}'"
        if not found:
            raise BadRecord(where, f"missing '{key}'", "bad_usage")
        raw = found.group(1)
        if not re.fullmatch(r"\d+", raw):
            raise BadRecord(where, f"must be a non-negative integer, got {raw!r}", "bad_usage")
        values[key] = int(raw)
    return _Usage(record.line, values["prompt_tokens"], values["completion_tokens"], attempts)


def _model(record: _Record, rel: str) -> str | None:
    found = MODEL_ROW.search(record.text)
    if not found or found.group("model") == "None":
        return None
    raw = found.group("model").removeprefix("ModelType.")
    if raw not in MODEL_NAMES:
        raise BadRecord(f"{rel}, line {record.line}, model_type", f"unknown model type {found.group('model')!r}",
                        "unknown_model")
    return MODEL_NAMES[raw]


def read_meta_task(path: Path) -> str | None:
    """The ``Task:`` section of a project's meta.txt (it may span lines), or None without one."""
    if not path.is_file():
        return None
    sections: dict[str, list[str]] = {}
    key = None
    for line in path.read_text(encoding="utf-8").replace("\r\n", "\n").split("\n"):
        name = line[:-1] if line.endswith(":") else None
        if name in META_KEYS:
            key = name
            sections[key] = []
        elif key is not None:
            sections[key].append(line)
    task = "\n".join(sections.get("Task", [])).strip()
    return task or None


def parse_log(path: Path, rel: str, meta_task: str | None = None) -> _Parsed:
    """Read one ChatDev log into its messages; raises BadRecord naming the file, line and field."""
    try:
        raw = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRecord(rel, f"not valid UTF-8 at byte {exc.start}", "invalid_utf8") from exc
    if not raw.strip():
        raise BadRecord(rel, "empty log", "empty_log")
    records = _records(raw.replace("\r\n", "\n").split("\n"), rel)

    task = meta_task
    messages: list[Message] = []
    events: list[TurnEvent] = []
    agent_models: dict[str, list[str]] = {}
    models: list[str] = []
    pending: list[_Usage] = []  # usage blocks of the current chat not yet given to a reply
    pending_users: list[Message] = []  # user messages waiting for the step they open
    chat = 0
    talk: _Chat | None = None  # the current phase chat, to rebuild each call's prompt
    system_messages: list[str] = []  # early logs: the system messages printed before the chat starts
    sends = 0  # API requests logged since the last usage block
    chat_model: str | None = None
    last_key: tuple[int, int] | None = None
    step = 0
    unmatched = with_usage = 0
    legacy = False

    def agent_message(record: _Record, speaker: str, key: tuple[int, int], text: str, side: int, content: str) -> None:
        nonlocal step, last_key, with_usage
        if key != last_key:  # a new (phase chat, turn N) pair, or the step a human comment opened
            step += 1
            last_key = key
        for msg in pending_users:
            messages.append(Message(msg.speaker, msg.role, msg.text, step, tstamp=msg.tstamp))
        pending_users.clear()
        usage = pending.pop(0) if pending else None
        with_usage += usage is not None
        prompt = talk.call(side, content, usage.attempts if usage else 1) if talk is not None else None
        messages.append(Message(
            speaker=speaker, role="agent", text=text, turn=step, prompt=prompt, tstamp=record.tstamp,
            logged_prompt_tokens=usage.prompt_tokens if usage else None,
            logged_completion_tokens=usage.completion_tokens if usage else None))
        agent_models.setdefault(speaker, []).extend([chat_model] if chat_model else [])

    for record in records:
        head = record.head
        if head.startswith("**[Preprocessing]**"):
            found = TASK_ROW.search(record.text)
            if found and found.group("task").strip():
                task = found.group("task").strip()
        elif TABLE.match(head):
            chat_model = _model(record, rel)
            if chat_model is not None:
                models.append(chat_model)
            system_messages = []
        elif head.startswith("System: SystemMessage("):
            if (system := _system_message(record)) is not None:
                system_messages.append(system)
        elif START_CHAT.match(head):
            chat += 1
            unmatched += len(pending)
            pending.clear()
            sends = 0
            talk = _Chat.start(record, system_messages)
        elif SEND.match(head):
            sends += 1
        elif USAGE.match(head):
            pending.append(_usage(record, rel, attempts=max(sends, 1)))
            sends = 0
        elif (found := MESSAGE.match(head)) is not None:
            speaker = found.group("speaker").strip()
            assistant, user = found.group("assistant").strip(), found.group("user").strip()
            if speaker not in (assistant, user):
                raise BadRecord(f"{rel}, line {record.line}, speaker",
                                f"{speaker!r} is neither role of the header {head!r}", "bad_header")
            side = talk.side(speaker, assistant, user) if talk is not None else 0
            agent_message(record, speaker, (chat, int(found.group("n"))), _reply(record), side, _content(record))
        elif head.startswith(f"{PROMPT_ENGINEER}: "):
            content = "\n".join([head[len(PROMPT_ENGINEER) + 2:], *record.body]).removesuffix("\n")
            agent_message(record, PROMPT_ENGINEER, (chat, 0), content.strip(), 0, content)
        elif COMMENTS.match(head):
            text = COMMENT_PREFIX.sub("", record.text.lstrip("\n"), count=1).strip()
            pending_users.append(Message("user", "user", text, 1, tstamp=record.tstamp))
            last_key = None
        elif TEST_REPORTS.match(head):
            report = record.text.strip()
            first = report.split("\n", 1)[0].strip()
            events.append(TurnEvent(kind="test_report", turn=max(step, 1), value=float(first.startswith(TEST_PASS)),
                                    detail=first[:200] or None))
        elif LEGACY.search(head):
            legacy = True
    unmatched += len(pending)

    if not any(m.role == "agent" for m in messages):
        if legacy:
            raise BadRecord(f"{rel}, message header", "pre-release AgentTech format ('[0] AI Assistant (Role):' "
                            "lines, no '<Role>: **A<->B on : Phase, turn N**' header)", "legacy_format")
        raise BadRecord(f"{rel}, message header",
                        f"no '<Role>: **A<->B on : Phase, turn N**' record in {len(records)} records", "no_messages")
    if not task:
        raise BadRecord(f"{rel}, task", "no task_prompt in the log's [Preprocessing] record nor a Task in meta.txt",
                        "missing_task")
    first_time = records[0].tstamp if records else None
    task_message = Message("user", "user", task, 1, tstamp=first_time)
    for msg in pending_users:  # comments after the last reply open a step of their own
        messages.append(Message(msg.speaker, msg.role, msg.text, step + 1, tstamp=msg.tstamp))
    return _Parsed([task_message, *messages], events, agent_models, models, unmatched, with_usage)


def _majority(models: list[str], prefer: str | None = None) -> str | None:
    """The most common model; a tie goes to ``prefer`` (the run's main model), then to the first name."""
    if not models:
        return prefer
    counts = Counter(models)
    return min(counts, key=lambda m: (-counts[m], m != prefer, m))


def _episode(folder: str, log: Path, parsed: _Parsed) -> Episode:
    # One model per agent: the one of most of the phases it spoke in. ChatDev runs TestErrorSummary on
    # gpt-3.5-turbo even in GPT-4 runs, so a few replies in those runs came from another model than their agent's.
    main_model = _majority(parsed.models)
    agents = tuple(Agent(name, _majority(models, main_model)) for name, models in parsed.agent_models.items())
    return Episode(
        episode_id=f"{NAME}/{folder}/{log.stem}",
        source=NAME,
        group_id=folder,
        agents=agents,
        messages=tuple(parsed.messages),
        outcome=Outcome(label="unknown", source="none", unknown_reason="no outcome in source"),
        category=main_model,
        events=tuple(parsed.events),
    )


def _signature(parsed: _Parsed) -> tuple[tuple[str, str], ...]:
    return tuple((m.speaker, m.text) for m in parsed.messages if m.role == "agent")


def read_project(raw_dir: Path, folder: Path, skips: SkipLog) -> list[Episode]:
    """The episodes of one project folder (one per log); bad logs go through ``skips``."""
    rel_folder = folder.relative_to(raw_dir).as_posix()
    logs = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix == ".log")
    if not logs:
        skips.handle(NAME, BadRecord(f"{rel_folder}, log", "project folder has no .log file", "missing_log"))
        return []
    meta_task = read_meta_task(folder / "meta.txt")
    parsed: dict[Path, _Parsed] = {}
    # A copy of a log (e.g. "<name> 2.log") repeats its replies: keep the shortest name, skip the copies.
    seen: dict[tuple[tuple[str, str], ...], Path] = {}
    for log in sorted(logs, key=lambda p: (len(p.name), p.name)):
        rel = log.relative_to(raw_dir).as_posix()
        try:
            result = parse_log(log, rel, meta_task)
            signature = _signature(result)
            if signature in seen:
                raise BadRecord(rel, f"repeats every reply of {seen[signature].name!r}", "duplicate_log")
        except BadRecord as exc:
            skips.handle(NAME, exc)
            continue
        seen[signature] = log
        parsed[log] = result
    return [_episode(folder.name, log, parsed[log]) for log in logs if log in parsed]


def read(raw_dir: Path, settings: Limit, skips: SkipLog) -> SourceData:
    most = settings.max_episodes
    warehouse = raw_dir / WAREHOUSE
    if not warehouse.is_dir():
        raise CoordsetError(f"{warehouse}: no WareHouse folder; fetch the chatdev source first")
    episodes: list[Episode] = []
    for folder in sorted(p for p in warehouse.iterdir() if p.is_dir()):
        if most is not None and len(episodes) >= most:
            break
        episodes += read_project(raw_dir, folder, skips)
    return SourceData(episodes[:most] if most is not None else episodes)


SOURCE = Source(
    name=NAME,
    title="ChatDev 1.0 software-company runs: role-playing LLM agents designing, coding, reviewing and testing",
    licence="Apache-2.0",
    hf_license="apache-2.0",
    homepage="https://github.com/OpenBMB/ChatDev",
    base_url="https://raw.githubusercontent.com/OpenBMB/ChatDev/31fd994416a251ecdeb1f0a73c329271743bfb56/",
    settings=partial(limit, source=NAME),
    read=read,
    billing="logged_prompt",
    turn="a ChatDev phase step: one (phase chat, turn N) exchange between the phase's two roles; each reply is one "
         "API call, whose prompt (rebuilt from the log, which holds no prompt verbatim) is that role's system prompt, "
         "the phase prompt and the phase chat's earlier replies",
    card="The example runs shipped in ChatDev 1.0's `WareHouse` (OpenBMB/ChatDev, branch `chatdev1.0`, Apache-2.0): "
         "one episode per project log, in which LLM agents playing a software company's roles (CEO, CPO, CTO, "
         "Programmer, Code Reviewer, Software Test Engineer, Counselor, ...) talk in pairs, phase by phase, from "
         "the customer's task to code, reviews, tests and a manual. Messages are the roles' replies with the API "
         "usage ChatDev logged for each call. ChatDev does not log the prompts it sends: each reply's `prompt` is "
         "rebuilt from the log as ChatDev's chat chain sent it (the role's system prompt, the phase prompt, i.e. "
         "ChatDev's template filled with the task, ideas and code, and the replies of that phase chat so far, "
         "each message under its chat role), and calls are billed for it; counted that way the rebuilt prompts "
         "match the logged prompt tokens to within a token or two, except for a few retried calls the log does not "
         "show. Phase prompts and system prompts are not messages; execution logs are left out. "
         "Timestamps are the log's local times read as UTC. ChatDev has no success label, so the outcome is "
         "`unknown`; the framework's own runs of the code are kept as `test_report` turn events.",
)
