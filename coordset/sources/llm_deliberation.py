"""LLM-Deliberation (Abdelnabi et al., NeurIPS 2024 D&B): scorable multi-party negotiation games among LLM agents.

Episodes. One run of a game is one episode. New-schema runs are ``logs/all_*/**/history*.json``: ``rounds`` is a
list of ``{agent, prompt, full_answer, public_answer}``, the first being p1's opening deal (the game's
``initial_deal.txt``, dictated by the logged prompt), then one entry per slot of ``slot_assignment``, then p1's
final deal. The run folder's ``config.txt`` (``name,file stem,role,incentive,model``) gives the agents and
``scores_files/<stem>.txt`` their score sheets; a folder without them (``all_greedy_base_gpt4``) takes both from
the game under ``games_descriptions/`` whose party names are the run's. Old-schema runs (``answers*.json`` inside
``logs/*.zip``, ``rounds: [[agent, text]...]`` plus p1's final deal in ``voting_sessions``) are read only with
``sources.llm_deliberation.archives: true``; their game and models come from the archive's name (table
``ARCHIVES``) and its own ``initial_prompts.txt`` where it has one.

Turns. ``turn`` is the index of the round entry + 1: turn 1 is p1's opening deal, the last turn of a complete run
is p1's final deal. Each entry is one agent message: ``text`` is the public answer (what the others saw),
``reasoning`` the rest of the full answer (scratchpad and plan), ``prompt`` the logged round prompt (billing
``logged_prompt``; the initial game prompt with the score sheet is not logged).

Outcomes (``game_rule``). A party accepts a deal when its score (the sum of its scores for the deal's options) is
strictly above its minimum threshold; a deal passes when every party accepts, when all but p1 accept and p1's
score + 10 (the unanimity bonus) reaches p1's threshold, or when all but one accept including both veto parties
(p1 and p2). The label says whether p1's final deal passes; ``any_deal_passed`` whether any deal p1 proposed did.
Each message with a parseable deal gets a ``deal_proposed`` event (value: parties accepting), each unparseable
one a ``deal_unparsed`` event.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordset.errors import ParamError
from coordset.params import get, require_bool
from coordset.records import BadRecord, SkipLog, json_object, require
from coordset.sources.episode import Agent, Episode, Message, Outcome, TurnEvent
from coordset.sources.registry import Source, SourceData, max_episodes

NAME = "llm_deliberation"
LOGS = "logs"
GAMES = "games_descriptions"
BONUS = 10  # p1's bonus for unanimity: a deal all others accept passes when p1's score + 10 reaches its threshold

# Old-schema archives, from their names and the upstream README: the game under games_descriptions/ whose parties
# and issues the runs have; whether its score sheets are the ones the runs used (False: a variant whose sheets are
# not in the mirror, outcome unknown); the category; the model of every agent unless the archive's own
# initial_prompts.txt names it.
ARCHIVES: dict[str, tuple[str, bool, str, str]] = {
    "llama2_13b": ("base", True, "base/cooperative", "llama-2-13b"),
    "llama2_70b_base_all_coop": ("base", True, "base/cooperative", "llama-2-70b"),
    "llama3_70b": ("base", True, "base/cooperative", "llama-3-70b"),
    "mixtralFivePlayers_base_all_coop": ("base", True, "base/cooperative/5_players", "mixtral"),
    "mixtralFourPlayers_base_all_coop": ("base", True, "base/cooperative/4_players", "mixtral"),
    "mixtralThreePlayers_base_all_coop": ("base", True, "base/cooperative/3_players", "mixtral"),
    "mixtral_base_all_coop": ("base", True, "base/cooperative", "mixtral"),
    "ouput_base_rewritten_allcoop_gpt4": ("base_rewritten", True, "base_rewritten/cooperative", "gpt-4"),
    "output_adv_game_targeted_adv_gpt3_base_rest_gpt4": ("base", True, "base/targeted_adv", "gpt-4"),
    "output_adv_game_targeted_union_base_gpt4": ("base", True, "base/targeted_adv", "gpt-4"),
    "output_adv_game_untargeted_base_gpt4": ("base", True, "base/untargeted_adv", "gpt-4"),
    "output_base_best_allcoop_gpt4": ("base", True, "base/cooperative", "gpt-4"),
    "output_base_leading_gpt3_rest_gpt4_allcoop": ("base", True, "base/cooperative", "gpt-4"),
    # Harder variants of the base game: their thresholds (e.g. Other Cities 40, not 31) are not in the mirror.
    "output_difficult_17_2_base_allcoop_gpt4": ("base", False, "base_difficult_17_2/cooperative", "gpt-4"),
    "output_difficult_30_4_base_allcoop_gpt4": ("base", False, "base_difficult_30_4/cooperative", "gpt-4"),
    "output_env_greedy_gpt4_rest_coop_base": ("base", True, "base/greedy_environment", "gpt-4"),
    "output_game1_57_21_gpt4_allcoop": ("game1", True, "game1/cooperative", "gpt-4"),
    "output_game2_57_18_gpt4_allcoop": ("game2", True, "game2/cooperative", "gpt-4"),
    # Private investors' threshold was 62 in these runs (their scratchpads); games_descriptions/game3 says 63.
    "output_game3_57_34_gpt4_allcoop": ("game3", False, "game3/cooperative", "gpt-4"),
    "output_leading_greedy_gpt4_rest_coop_base": ("base", True, "base/greedy_p1", "gpt-4"),
    "output_two_greedy_mayor_union_gpt4_rest_coop_base": ("base", True, "base/greedy_mayor_union", "gpt-4"),
    "output_union_mayor_gpt3_rest_gpt4_base_all_coop": ("base", True, "base/cooperative", "gpt-4"),
}
# The base game of the old-schema runs had the Environmental League's threshold at 50 (the archive
# output_two_greedy_mayor_union's own initial prompt says "less than 50"); games_descriptions/base now says 55.
OLD_BASE_THRESHOLDS = {"enviroment": 50}
# Old-schema speaker names that are not a game's config name once "the " and case are dropped.
ALIASES: dict[str, dict[str, str]] = {
    "game1": {"international bank": "international development bank"},
    "game2": {"activists": "local activists", "ngo": "local ngo", "foreign agency": "foreign aid agency",
              "government": "local government"},
    "game3": {"federal government": "federal government of germany", "state government": "state government of saarland",
              "neunkirchen community": "local community of neunkirchen"},
}

DEAL_BLOCK = re.compile(r"<DEAL>(.*?)</DEAL>", re.S | re.I)
DEAL_OPEN = re.compile(r"<DEAL>(.*)", re.S | re.I)  # an opening tag the model never closed
OPTION = re.compile(r"\b([A-Z])(\d+(?:\.\d+)?)\b")  # A1 ... F4; "D2.5" is caught to be rejected


@dataclass(frozen=True)
class Party:
    name: str
    stem: str  # file name under scores_files/
    role: str  # p1, p2, player, target
    incentive: str
    model: str | None


@dataclass(frozen=True)
class Sheet:
    """One party's scores: ``options[i][j]`` is the score of option j+1 of issue i; the threshold is the minimum."""

    options: tuple[tuple[int, ...], ...]
    threshold: int


@dataclass(frozen=True)
class Verdict:
    accepting: tuple[str, ...]  # parties whose score is strictly above their threshold
    passes: bool


Deal = tuple[int, ...]  # the chosen option (1-based) of each issue, issue A first


# ---------------------------------------------------------------- the game rule

def deal_score(sheet: Sheet, deal: Deal) -> int:
    return sum(sheet.options[i][option - 1] for i, option in enumerate(deal))


def evaluate(sheets: dict[str, Sheet], p1: str, p2: str | None, deal: Deal) -> Verdict:
    """Which parties accept ``deal`` and whether it passes by the game's rule (see the module docstring)."""
    accepting = tuple(name for name, sheet in sheets.items() if deal_score(sheet, deal) > sheet.threshold)
    n, k = len(sheets), len(accepting)
    if k == n:
        passes = True
    elif k == n - 1 and p1 in sheets and p1 not in accepting:
        passes = deal_score(sheets[p1], deal) + BONUS >= sheets[p1].threshold
    else:
        passes = k == n - 1 and p1 in accepting and p2 is not None and p2 in accepting
    return Verdict(accepting, passes)


def format_deal(deal: Deal) -> str:
    return ",".join(f"{chr(ord('A') + i)}{option}" for i, option in enumerate(deal))


def _options(text: str, n_options: tuple[int, ...]) -> tuple[Deal | None, str | None]:
    chosen: dict[int, set[int]] = {}
    for letter, number in OPTION.findall(text):
        issue = ord(letter) - ord("A")
        if issue >= len(n_options) or "." in number or not 1 <= int(number) <= n_options[issue]:
            return None, f"no option {letter}{number} in this game"
        chosen.setdefault(issue, set()).add(int(number))
    letters = [chr(ord("A") + i) for i in range(len(n_options))]
    several = [letters[i] for i, opts in sorted(chosen.items()) if len(opts) > 1]
    if several:
        return None, f"several options for issue {','.join(several)}"
    missing = [letters[i] for i in range(len(n_options)) if i not in chosen]
    if missing:
        return None, f"no option for issue {','.join(missing)}"
    return tuple(next(iter(chosen[i])) for i in range(len(n_options))), None


def parse_deal(text: str, n_options: tuple[int, ...]) -> tuple[Deal | None, str | None]:
    """The deal a message proposes: ``(deal, None)``; ``(None, problem)`` for a proposal that cannot be read;
    ``(None, None)`` when the message proposes nothing.

    The proposal is the first ``<DEAL>`` block naming exactly one valid option per issue (later blocks are
    alternatives). A message without a block proposes a deal only when its whole text names exactly one option
    for every issue and nothing else (e.g. "I support A2, B2, C1, D1, E3 and F1").
    """
    blocks = DEAL_BLOCK.findall(text)
    if not blocks:
        unclosed = DEAL_OPEN.search(text)
        if unclosed is None:
            deal, _ = _options(text, n_options)
            return deal, None
        blocks = [unclosed.group(1)]
    problem = None
    for block in blocks:
        deal, why = _options(block, n_options)
        if deal is not None:
            return deal, None
        problem = problem or why
    return None, problem


# ---------------------------------------------------------------- configs and score sheets

def _read_text(path: Path, raw: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadRecord(str(path.relative_to(raw)), f"cannot read ({exc})", "unreadable_file") from exc


def parse_config(text: str, where: str) -> list[Party]:
    """``config.txt``: one ``name,file stem,role,incentive[,model]`` line per agent (old archives omit the model)."""
    parties = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) not in (4, 5) or not all(fields[:3]):
            raise BadRecord(f"{where}, line {lineno}", "expected 'name,file stem,role,incentive,model'", "bad_config")
        parties.append(Party(fields[0], fields[1], fields[2], fields[3], fields[4] if len(fields) == 5 else None))
    names = [p.name for p in parties]
    if not parties or len(set(names)) != len(names):
        raise BadRecord(where, f"needs distinct agent names, got {names}", "bad_config")
    return parties


def parse_sheet(text: str, where: str) -> Sheet:
    """A scores file: one comma-separated line of option scores per issue, the minimum threshold last."""
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    try:
        options = tuple(tuple(int(x) for x in line.split(",")) for _, line in lines[:-1])
        threshold = int(lines[-1][1]) if lines else None
    except ValueError as exc:
        raise BadRecord(where, f"scores must be comma-separated integers ({exc})", "bad_scores") from exc
    if threshold is None or not options:
        raise BadRecord(where, "needs at least one issue line and a threshold line", "bad_scores")
    return Sheet(options, threshold)


@dataclass(frozen=True)
class Setup:
    """Who plays a run, how many options each issue has, and the score sheets (None where not known)."""

    parties: tuple[Party, ...]
    category: str
    n_options: tuple[int, ...] | None
    sheets: dict[str, Sheet] | None

    def role(self, role: str) -> str | None:
        return next((p.name for p in self.parties if p.role == role), None)


def _shape(sheets: dict[str, Sheet]) -> tuple[int, ...]:
    return tuple(len(o) for o in next(iter(sheets.values())).options)


def _sheets(folder: Path, parties: list[Party], raw: Path,
            overrides: dict[str, int] | None = None) -> dict[str, Sheet]:
    sheets = {}
    for party in parties:
        path = folder / "scores_files" / f"{party.stem}.txt"
        if not path.is_file():
            raise BadRecord(str(path.relative_to(raw)), f"no scores file for {party.name!r}", "missing_scores")
        sheet = parse_sheet(_read_text(path, raw), str(path.relative_to(raw)))
        if overrides and party.stem in overrides:
            sheet = Sheet(sheet.options, overrides[party.stem])
        sheets[party.name] = sheet
    shapes = {tuple(len(o) for o in s.options) for s in sheets.values()}
    if len(shapes) != 1:
        raise BadRecord(str(folder.relative_to(raw)), f"score sheets disagree on the options per issue: {shapes}",
                        "bad_scores")
    return sheets


class Games:
    """The games under ``games_descriptions/``: their configs, read once."""

    def __init__(self, raw: Path) -> None:
        self.raw = raw
        self.configs: dict[str, list[Party]] = {}
        for path in sorted((raw / GAMES).glob("*/config.txt")):
            self.configs[path.parent.name] = parse_config(_read_text(path, raw), str(path.relative_to(raw)))

    def by_stems(self, parties: list[Party]) -> str | None:
        stems = {p.stem for p in parties}
        return next((g for g, c in self.configs.items() if {p.stem for p in c} == stems), None)

    def by_names(self, names: set[str]) -> str | None:
        return next((g for g, c in self.configs.items() if {p.name for p in c} == names), None)

    def sheets(self, game: str, parties: list[Party], overrides: dict[str, int] | None = None) -> dict[str, Sheet]:
        return _sheets(self.raw / GAMES / game, parties, self.raw, overrides)


def _mix(parties: list[Party] | tuple[Party, ...]) -> str:
    return "+".join(sorted({p.incentive for p in parties}))


# ---------------------------------------------------------------- building an episode

def _private(full: str, public: str) -> str | None:
    """The full answer less what was said: the scratchpad and plan the agent kept to itself."""
    if full.strip() == public.strip():
        return None
    tagged = f"<ANSWER>{public}</ANSWER>"
    if tagged in full:
        rest = full.replace(tagged, "", 1)
    elif public.strip() and public.strip() in full:
        rest = full.replace(public.strip(), "", 1)
    else:
        rest = full  # the public text is not a verbatim part of it: keep the full answer as written
    return rest.strip() or None


def _episode(episode_id: str, group_id: str, subset: str, setup: Setup, messages: list[Message],
             complete: bool, where: str) -> Episode:
    names = {p.name for p in setup.parties}
    for index, msg in enumerate(messages):
        if msg.speaker not in names:
            raise BadRecord(f"{where}, round {index}, field 'agent'",
                            f"agent {msg.speaker!r} is not in the config ({sorted(names)})", "unknown_agent")
    p1, p2 = setup.role("p1"), setup.role("p2")
    events: list[TurnEvent] = []
    p1_verdicts: list[bool] = []
    final: tuple[Deal | None, str | None] = (None, None)
    for position, msg in enumerate(messages):
        if setup.n_options is None:
            continue  # a game of unknown layout: no deal can be read
        deal, problem = parse_deal(msg.text, setup.n_options)
        if problem is not None:
            events.append(TurnEvent("deal_unparsed", msg.turn, position, msg.speaker, None, problem))
        elif deal is not None:
            if setup.sheets is None:
                events.append(TurnEvent("deal_proposed", msg.turn, position, msg.speaker, None,
                                        f"{format_deal(deal)} (scores unknown)"))
            else:
                verdict = evaluate(setup.sheets, p1 or "", p2, deal)
                events.append(TurnEvent("deal_proposed", msg.turn, position, msg.speaker, float(len(verdict.accepting)),
                                        f"{format_deal(deal)} {'pass' if verdict.passes else 'fail'}"))
                if msg.speaker == p1:
                    p1_verdicts.append(verdict.passes)
        if position == len(messages) - 1:
            final = (deal, problem)
    outcome = _outcome(setup, messages, complete, final, p1_verdicts)
    return Episode(
        episode_id=episode_id, source=NAME, group_id=group_id,
        agents=tuple(Agent(p.name, p.model) for p in setup.parties), messages=tuple(messages), outcome=outcome,
        category=setup.category, subset=subset, events=tuple(events),
    )


def _outcome(setup: Setup, messages: list[Message], complete: bool, final: tuple[Deal | None, str | None],
             p1_verdicts: list[bool]) -> Outcome:
    p1 = setup.role("p1")
    any_passed = any(p1_verdicts) if setup.sheets is not None else None
    if setup.sheets is None:
        return Outcome("unknown", "game_rule", unknown_reason="game_scores_unknown", any_deal_passed=None)
    if p1 is None:
        return Outcome("unknown", "game_rule", unknown_reason="no_p1_in_config", any_deal_passed=any_passed)
    if not complete or messages[-1].speaker != p1:
        return Outcome("unknown", "game_rule", unknown_reason="run_stopped_early", any_deal_passed=any_passed)
    deal, problem = final
    if deal is None:
        reason = "final_deal_unparsed" if problem else "no_final_deal"
        return Outcome("unknown", "game_rule", unknown_reason=reason, any_deal_passed=any_passed)
    verdict = evaluate(setup.sheets, p1, setup.role("p2"), deal)
    return Outcome("pass" if verdict.passes else "fail", "game_rule", any_deal_passed=any_passed)


# ---------------------------------------------------------------- new schema: logs/all_*/**/history*.json

class Folders:
    """Each run folder's setup, read once (or the BadRecord that stops its runs)."""

    def __init__(self, raw: Path, games: Games) -> None:
        self.raw, self.games = raw, games
        self.cache: dict[Path, Setup | BadRecord] = {}

    def setup(self, folder: Path, record: dict[str, Any], where: str) -> Setup:
        if folder not in self.cache:
            try:
                self.cache[folder] = self._setup(folder, record, where)
            except BadRecord as exc:
                self.cache[folder] = exc
        found = self.cache[folder]
        if isinstance(found, BadRecord):
            raise found
        return found

    def _setup(self, folder: Path, record: dict[str, Any], where: str) -> Setup:
        config = folder / "config.txt"
        if config.is_file():
            parties = parse_config(_read_text(config, self.raw), str(config.relative_to(self.raw)))
            game = self.games.by_stems(parties) or folder.relative_to(self.raw / LOGS).parts[0]
            sheets = _sheets(folder, parties, self.raw)
            return Setup(tuple(parties), f"{game}/{_mix(parties)}", _shape(sheets), sheets)
        # No config.txt: the game whose party names are exactly the run's speakers and slots (its config and
        # score sheets; the per-agent incentives of such a run are not logged, so the category is the game).
        names = {r.get("agent") for r in record.get("rounds", []) if isinstance(r, dict)}
        names |= {s for s in record.get("slot_assignment", []) if isinstance(s, str)}
        game = self.games.by_names(names)
        if game is None:
            raise BadRecord(f"{where}, field 'rounds'", f"no config.txt in {folder.relative_to(self.raw)} and no game "
                            f"under {GAMES}/ has the parties {sorted(map(str, names))}", "missing_config")
        parties = self.games.configs[game]
        sheets = self.games.sheets(game, parties)
        return Setup(tuple(parties), game, _shape(sheets), sheets)


def _history_episode(path: Path, raw: Path, folders: Folders) -> Episode:
    rel = path.relative_to(raw)
    where = str(rel)
    record = json_object(path.read_bytes(), where)
    rounds = require(record, "rounds", list, where)
    if not rounds:
        raise BadRecord(f"{where}, field 'rounds'", "empty rounds", "empty_rounds")
    slots = require(record, "slot_assignment", list, where)
    setup = folders.setup(path.parent, record, where)
    messages = []
    for index, entry in enumerate(rounds):
        here = f"{where}, round {index}"
        if not isinstance(entry, dict):
            raise BadRecord(here, f"expected an object, got {type(entry).__name__}", "wrong_type")
        agent = require(entry, "agent", str, here)
        public = require(entry, "public_answer", str, here)
        full = require(entry, "full_answer", str, here)
        prompt = require(entry, "prompt", str, here)
        messages.append(Message(agent, "agent", public, index + 1, reasoning=_private(full, public),
                                prompt=prompt or None))
    # Complete: the opening deal, every planned slot, then p1's final deal.
    complete = len(rounds) == len(slots) + 2
    folder = str(path.parent.relative_to(raw / LOGS))
    episode_id = f"{NAME}/{rel.relative_to(LOGS).with_suffix('')}"
    return _episode(episode_id, folder, "history", setup, messages, complete, where)


def _history_files(raw: Path) -> list[Path]:
    return sorted(p for p in (raw / LOGS).glob("all_*/**/history*.json") if p.is_file())


# ---------------------------------------------------------------- old schema: logs/*.zip (answers*.json)

def _norm(name: str) -> str:
    name = name.strip().lower()
    return name[4:] if name.startswith("the ") else name


def _archive_parties(speakers: list[str], game: str | None, games: Games, models: dict[str, str | None],
                     team_model: str | None, where: str) -> list[Party]:
    """The run's speakers as parties of the game (role and file stem from its config), in the config's order."""
    config = games.configs.get(game or "", [])
    aliases = ALIASES.get(game or "", {})
    by_norm = {_norm(p.name): p for p in config}
    parties = []
    for speaker in speakers:
        base = by_norm.get(aliases.get(_norm(speaker), _norm(speaker)))
        if base is None and config:
            raise BadRecord(f"{where}, field 'rounds'", f"agent {speaker!r} is not a party of the {game} game",
                            "unknown_agent")
        model = models.get(speaker, team_model)
        if base is None:
            parties.append(Party(speaker, "", "player", "unknown", model))
        else:
            parties.append(Party(speaker, base.stem, base.role, base.incentive, model))
    order = {p.stem: i for i, p in enumerate(config)}
    return sorted(parties, key=lambda p: order.get(p.stem, len(order)))


def _zip_models(zf: zipfile.ZipFile) -> dict[str, str | None]:
    """Models the archive's own initial_prompts.txt names (``name,prompt file,role[,model]``)."""
    models: dict[str, str | None] = {}
    for entry in sorted(n for n in zf.namelist() if n.endswith("initial_prompts.txt")):
        for line in zf.read(entry).decode("utf-8", "replace").splitlines():
            fields = [f.strip() for f in line.split(",")]
            if len(fields) == 4 and fields[0]:
                models[fields[0]] = fields[3]
    return models


def _archive_episodes(path: Path, raw: Path, games: Games, skips: SkipLog) -> Iterator[Episode]:
    rel = str(path.relative_to(raw))
    stem = path.stem
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        skips.handle(NAME, BadRecord(rel, f"not a readable zip archive ({exc})", "bad_archive"))
        return
    with zf:
        names = set(zf.namelist())
        models = _zip_models(zf)
        for entry in sorted(names):
            base = entry.rsplit("/", 1)[-1]
            if entry.endswith("/") or base.endswith(".txt") or base.startswith("full_conversation"):
                continue  # folders, prompt and config text, and the companions read with their answers file
            try:
                if not (base.startswith("answers") and base.endswith(".json")):
                    raise BadRecord(f"{rel}: {entry}", "not an answers*.json run log", "unexpected_entry")
                yield _archive_episode(zf, entry, names, f"{rel}: {entry}", stem, games, models)
            except BadRecord as exc:
                skips.handle(NAME, exc)


def _archive_episode(zf: zipfile.ZipFile, entry: str, names: set[str], where: str, stem: str, games: Games,
                     models: dict[str, str | None]) -> Episode:
    record = json_object(zf.read(entry), where)
    rounds = require(record, "rounds", list, where)
    if not rounds:
        raise BadRecord(f"{where}, field 'rounds'", "empty rounds", "empty_rounds")
    said: list[tuple[str, str]] = []
    for index, pair in enumerate(rounds):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair) and pair[0]):
            raise BadRecord(f"{where}, round {index}", "expected [agent, text]", "wrong_type")
        said.append((pair[0], pair[1]))
    voting = record.get("voting_sessions") or {}
    session = voting.get("0") if isinstance(voting, dict) else None
    final = session.get("deal_suggestion") if isinstance(session, dict) else None
    p1_speaker = said[0][0]  # the opening deal is p1's
    if isinstance(final, str):
        said.append((p1_speaker, final))

    # Prompts and full answers from the companion full_conversation file, where its rounds line up.
    prompts: list[str | None] = [None] * len(said)
    fulls: list[str | None] = [None] * len(said)
    companion = entry.replace("/answers", "/full_conversation", 1)
    if companion in names:
        full = json_object(zf.read(companion), f"{where} (companion {companion})")
        rnd = full.get("rounds") if isinstance(full.get("rounds"), dict) else {}
        answers, asked = rnd.get("answers") or [], rnd.get("prompts") or []
        n = len(rounds) - 1
        if len(answers) >= n and len(asked) >= n and all(
                isinstance(answers[i], list) and answers[i][:1] == [rounds[i + 1][0]] for i in range(n)):
            for i in range(n):
                prompts[i + 1] = asked[i] if isinstance(asked[i], str) else None
                fulls[i + 1] = answers[i][1] if len(answers[i]) > 1 and isinstance(answers[i][1], str) else None
        vote = (full.get("voting_sessions") or {}).get("0", {}).get("deal_suggestion")
        if isinstance(final, str) and isinstance(vote, dict):
            prompts[-1] = vote.get("prompt") if isinstance(vote.get("prompt"), str) else None
            fulls[-1] = vote.get("answer") if isinstance(vote.get("answer"), str) else None

    game, scored, category, team_model = ARCHIVES.get(stem, (None, False, stem, None))
    speakers = list(dict.fromkeys(s for s, _ in said))
    parties = _archive_parties(speakers, game, games, models, team_model, where)
    setup = Setup(tuple(parties), category, None, None)
    if game is not None:
        sheets = games.sheets(game, parties, OLD_BASE_THRESHOLDS if game == "base" else None)
        setup = Setup(tuple(parties), category, _shape(sheets), sheets if scored else None)
    messages = [Message(speaker, "agent", text, i + 1, prompt=prompts[i] or None,
                        reasoning=_private(fulls[i], text) if fulls[i] is not None else None)
                for i, (speaker, text) in enumerate(said)]
    episode_id = f"{NAME}/{stem}/{entry.removesuffix('.json')}"
    return _episode(episode_id, stem, "archive", setup, messages, isinstance(final, str), where)


# ---------------------------------------------------------------- the reader

@dataclass(frozen=True)
class Settings:
    max_episodes: int | None = None
    archives: bool = False  # also the old-schema runs in logs/*.zip


def source_settings(params: dict[str, Any]) -> Settings:
    key = f"sources.{NAME}"
    node = get(params, key)
    if not isinstance(node, dict):
        raise ParamError(key, "must be a mapping")
    archives = require_bool(params, f"{key}.archives") if "archives" in node else False
    return Settings(max_episodes(params, NAME), archives)


def choose_files(pins: dict[str, str], settings: Settings) -> dict[str, str]:
    """The old-schema archives only when ``archives`` is on."""
    return {p: h for p, h in pins.items()
            if settings.archives or not (p.startswith(f"{LOGS}/") and p.endswith(".zip"))}


def read(raw: Path, settings: Settings, skips: SkipLog) -> SourceData:
    limit, archives = settings.max_episodes, settings.archives
    games = Games(raw)
    folders = Folders(raw, games)
    episodes: list[Episode] = []

    def full() -> bool:
        return limit is not None and len(episodes) >= limit

    for path in _history_files(raw):
        if full():
            break
        try:
            episodes.append(_history_episode(path, raw, folders))
        except BadRecord as exc:
            skips.handle(NAME, exc)
    if archives:
        for path in sorted((raw / LOGS).glob("*.zip")):
            for episode in _archive_episodes(path, raw, games, skips):
                if full():
                    break
                episodes.append(episode)
            if full():
                break
    return SourceData(episodes)


SOURCE = Source(
    name=NAME,
    title="LLM-Deliberation: scorable multi-party negotiation games among 3-7 LLM stakeholder agents",
    licence="MIT",
    hf_license="mit",
    homepage="https://github.com/S-Abdelnabi/LLM-Deliberation",
    base_url="https://raw.githubusercontent.com/S-Abdelnabi/LLM-Deliberation/78e11e04ba89b9d888cb006f57bad696584a32f1/",
    settings=source_settings,
    choose_files=choose_files,
    read=read,
    success_outcomes=("pass",),
    billing="logged_prompt",
    native_labels=("game_rule",),
    turn="one round entry of the log (index + 1): turn 1 is p1's opening deal, the last turn p1's final deal",
    card="Negotiation games of the LLM-Deliberation benchmark (Abdelnabi et al., NeurIPS 2024 Datasets and "
         "Benchmarks): 6 or 7 GPT-4 stakeholders (a company, a ministry, a union, an environmental league, ...) "
         "negotiate a deal over 5-6 issues for up to 30 rounds, each with a private score sheet and a minimum "
         "threshold. One logged run is one episode (134 runs of the current code; the older archives of Llama, "
         "Mixtral and GPT-3.5/4 teams are optional); each round is one agent message with its public answer, its "
         "private scratchpad as reasoning and the logged round prompt. The outcome is computed from the score "
         "sheets by the game's rule: `pass` or `fail` for p1's final deal (a party accepts when its score is "
         "strictly above its threshold; a deal passes when all accept, when all but p1 accept and p1's score + 10 "
         "reaches its threshold, or when all but one accept including both veto parties), `unknown` when the run "
         "stopped early or the final deal cannot be read. Every parseable proposal is a `deal_proposed` event with "
         "the number of parties accepting. MIT licence (`LICENSE` at the pinned commit).",
)
