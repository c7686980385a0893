"""The dataset card (data/release/README.md) in the Hugging Face card format, generated from the build.

A YAML header (licence, languages, size category, the Parquet config and ``dataset_info.features``),
then what every field means (from ``schemas.release.FIELDS``, the same table the Parquet schema is made
from), how each annotation was made (in the card's own words), the params and
metrics of the run, the sources with their licences and the known limitations. Numbers are reported as
they came out: where the recurrent model, a judge or a label does worse than its baseline, the card
says so in words. Nothing in it depends on the clock or the machine.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pyarrow
import yaml

from coordset.latent import LatentSettings
from coordset.release.settings import PARQUET, ReleaseSettings, ReleaseSummary
from coordset.sources import REGISTRY
from coordset.sources.registry import BILLING, Source
from schemas.release import FIELDS, describe

PRETTY_NAME = "coordset: multi-LLM interaction episodes"
TASK_CATEGORIES = ["text-generation", "text-classification"]
TAGS = ["multi-agent", "llm-as-a-judge", "mt-bench", "pairwise-preference", "token-usage", "latent-states", "dvc"]
# Params that shape the released data; the card prints their values.
PARAM_KEYS = ("numerics", "rank", "model", "thresholds", "sources", "enrich", "embed", "latent", "label", "release")
HIGH_INCONSISTENCY = 0.30  # a judge flipping on this share of its valid verdicts is called out
FEW_FLEISS_SHARE = 0.25    # Fleiss' kappa on fewer than this share of the judged episodes is called out
LANGUAGE_CODES = {"english": "en", "korean": "ko", "chinese": "zh", "spanish": "es", "french": "fr",
                  "german": "de", "japanese": "ja", "russian": "ru", "portuguese": "pt", "italian": "it"}


@dataclass(frozen=True)
class LatentBaseline:
    """A held-out figure of the recurrent model in metrics/latent.json and the baseline it is set against."""

    metric: str
    baseline: str
    lower_is_better: bool
    what: str
    against: str


LATENT_BASELINES = (
    LatentBaseline("reconstruction_error", "pca_reconstruction_error", True, "held-out reconstruction error",
                   "a PCA of the same rank fitted on the training groups"),
    LatentBaseline("explained_variance", "pca_explained_variance", False, "held-out explained variance",
                   "a PCA of the same rank fitted on the training groups"),
    LatentBaseline("next_step_error", "next_step_error_no_memory", True, "held-out next-message prediction error",
                   "the no-memory baseline (the current message as the prediction of the next)"),
    LatentBaseline("next_step_error", "next_step_error_no_memory_same_rank", True,
                   "held-out next-message prediction error",
                   "a memoryless linear predictor through the same rank"),
    LatentBaseline("probe_accuracy", "probe_majority_rate", False, "outcome probe accuracy", "the majority class"),
    LatentBaseline("probe_accuracy_all_episodes", "probe_majority_rate_all_episodes", False,
                   "outcome probe accuracy over all episodes", "the majority class"),
)


# ---------------------------------------------------------------------------------------------------------
# Small formatting helpers.


def size_category(n: int) -> str:
    """The Hub's size_categories bucket for ``n`` rows."""
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]
    for bound, label in bounds:
        if n < bound:
            return label
    return "n>1B"


def _number(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _share(value: Any) -> str:
    return f"{value:.0%}" if isinstance(value, (int, float)) and not isinstance(value, bool) else _number(value)


def _cell(value: Any) -> str:
    text = _number(value) if not isinstance(value, (list, dict)) else yaml.safe_dump(value, default_flow_style=True,
                                                                                      width=10_000).strip()
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def flatten(metrics: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested metrics as (dotted key, value) rows, in sorted key order."""
    rows: list[tuple[str, Any]] = []
    for key in sorted(metrics):
        value = metrics[key]
        if isinstance(value, dict) and value:
            rows += flatten(value, f"{prefix}{key}.")
        else:
            rows.append((f"{prefix}{key}", value))
    return rows


def arrow_type_name(kind: pyarrow.DataType) -> str:
    """A short readable type, e.g. ``list<list<float32>>``, ``list<struct<turn: int64, ...>>``."""
    if pyarrow.types.is_list(kind) or pyarrow.types.is_large_list(kind):
        return f"list<{arrow_type_name(kind.value_type)}>"
    if pyarrow.types.is_struct(kind):
        return "struct<" + ", ".join(f"{f.name}: {arrow_type_name(f.type)}" for f in kind) + ">"
    return _hf_dtype(kind)


# Arrow type -> the Hub's dtype name (datasets.Value); Arrow calls float64 "double" and float32 "float".
HF_DTYPES = {pyarrow.string(): "string", pyarrow.large_string(): "large_string", pyarrow.bool_(): "bool",
             pyarrow.int32(): "int32", pyarrow.int64(): "int64", pyarrow.float32(): "float32",
             pyarrow.float64(): "float64"}


def _hf_dtype(kind: pyarrow.DataType) -> str:
    if kind not in HF_DTYPES:
        raise ValueError(f"no Hub dtype for Arrow type {kind}")
    return HF_DTYPES[kind]


def _hf_inner(kind: pyarrow.DataType) -> Any:
    if pyarrow.types.is_list(kind) or pyarrow.types.is_large_list(kind):
        return {"list": _hf_inner(kind.value_type)}
    if pyarrow.types.is_struct(kind):
        return [hf_feature(f.name, f.type) for f in kind]
    return _hf_dtype(kind)


def hf_feature(name: str, kind: pyarrow.DataType) -> dict[str, Any]:
    """One entry of ``dataset_info.features`` in the Hub's YAML (``dtype``, ``list`` or ``struct``)."""
    if pyarrow.types.is_list(kind) or pyarrow.types.is_large_list(kind):
        return {"name": name, "list": _hf_inner(kind.value_type)}
    if pyarrow.types.is_struct(kind):
        return {"name": name, "struct": _hf_inner(kind)}
    return {"name": name, "dtype": _hf_dtype(kind)}


def _languages(counts: dict[str, int]) -> list[str]:
    codes = set()
    for value in counts:
        value = value.strip().lower()
        if re.fullmatch(r"[a-z]{2,3}", value):
            codes.add(value)
        elif value in LANGUAGE_CODES:
            codes.add(LANGUAGE_CODES[value])
    return sorted(codes)


# ---------------------------------------------------------------------------------------------------------
# Findings: honest sentences from the metrics.


def _compare(model: Any, baseline: Any, lower_is_better: bool) -> bool | None:
    if not isinstance(model, (int, float)) or not isinstance(baseline, (int, float)):
        return None
    return model < baseline if lower_is_better else model > baseline


def latent_findings(latent: dict[str, Any], baselines: Iterable[LatentBaseline] = LATENT_BASELINES) -> list[str]:
    """One sentence per (model metric, baseline) pair that metrics/latent.json reports."""
    sentences = []
    for b in baselines:
        if b.metric not in latent or b.baseline not in latent:
            continue  # metrics/latent.json of this build does not report this pair
        model, base = latent.get(b.metric), latent.get(b.baseline)
        better = _compare(model, base, b.lower_is_better)
        direction = "lower" if b.lower_is_better else "higher"
        figures = f"`{b.metric}` {_number(model)} vs `{b.baseline}` {_number(base)}, {direction} is better"
        if better is None:
            sentences.append(f"{b.what}: not comparable ({figures}).")
        elif better:
            sentences.append(f"The recurrent model beats {b.against} on {b.what} ({figures}).")
        else:
            sentences.append(f"The recurrent model **does not beat** {b.against} on {b.what} ({figures}).")
    return sentences


def not_beaten(latent: dict[str, Any], baselines: Iterable[LatentBaseline] = LATENT_BASELINES
               ) -> list[LatentBaseline]:
    """The baselines the recurrent model fails to beat, among those metrics/latent.json reports."""
    return [b for b in baselines
            if _compare(latent.get(b.metric), latent.get(b.baseline), b.lower_is_better) is False]


def judge_findings(labels: dict[str, Any]) -> list[str]:
    sentences = []
    judges = labels.get("judges") or {}
    episodes = labels.get("episodes")
    kappa, used = judges.get("fleiss_kappa"), judges.get("fleiss_n_episodes")
    if judges.get("fleiss_n_judges"):
        if kappa is None:
            sentences.append(f"Fleiss' kappa over the {judges['fleiss_n_judges']} judges is undefined (on {used} "
                             "episodes every judge judged consistently).")
        else:
            share = used / episodes if episodes else 0.0
            text = (f"Fleiss' kappa over the {judges['fleiss_n_judges']} judges is {_number(kappa)}, computed on "
                    f"{used} of {episodes} episodes ({share:.1%}): only episodes that every judge judged "
                    "consistently count.")
            if share < FEW_FLEISS_SHARE:
                text += (" That is **few episodes**, and a selected subset (those where no judge's verdict flipped "
                         "with the answer order): it describes agreement on those cases, not on the whole set.")
            sentences.append(text)
    rates = {name: j.get("inconsistency_rate") for name, j in (judges.get("consistency") or {}).items()}
    rates = {k: v for k, v in rates.items() if isinstance(v, (int, float))}
    if rates:
        mean = sum(rates.values()) / len(rates)
        high = sorted((k for k, v in rates.items() if v >= HIGH_INCONSISTENCY), key=lambda k: -rates[k])
        text = f"The judges' mean position inconsistency is {mean:.1%} of their valid verdicts"
        if high:
            text += ("; **high judge inconsistency** (at least "
                     f"{HIGH_INCONSISTENCY:.0%} of verdicts change when the answer order is swapped): "
                     + ", ".join(f"{k} {rates[k]:.1%}" for k in high))
        sentences.append(text + ". Inconsistent verdicts abstain from the consensus.")
    consensus = labels.get("consensus") or {}
    if consensus and episodes:
        sentences.append(f"Consensus: {consensus.get('unknown', 0)} of {episodes} episodes are `unknown` (no "
                         f"consistent verdict, or no judges) and {consensus.get('tie', 0)} are `tie`.")
    rule = labels.get("rule_vs_consensus") or {}
    if rule.get("n"):
        sentences.append(f"The rule outcome agrees with the consensus on {_number(rule.get('accuracy'))} of "
                         f"{rule['n']} episodes where both are known (Cohen's kappa {_number(rule.get('kappa'))}; "
                         f"{_number(rule.get('accuracy_non_tie'))} on the {rule.get('n_non_tie')} without a tie "
                         "consensus).")
    sentences += llm_sentences(labels.get("llm"), labels.get("llm_vs_consensus"))
    return sentences


# ---------------------------------------------------------------------------------------------------------
# The card.


@dataclass(frozen=True)
class CardInputs:
    summary: ReleaseSummary
    settings: ReleaseSettings
    params: dict[str, Any]
    metrics: dict[str, dict[str, Any]]


def header(card: CardInputs) -> dict[str, Any]:
    summary = card.summary
    licences = {REGISTRY[s].hf_license for s in summary.sources}
    meta: dict[str, Any] = {}
    if len(licences) == 1 and None not in licences:
        meta["license"] = licences.pop()
    else:
        meta["license"] = "other"
        meta["license_name"] = "coordset-mixed-sources"  # one licence per source: see "Sources and licences"
    meta["pretty_name"] = PRETTY_NAME
    languages = _languages(summary.languages)
    if languages:
        meta["language"] = languages
    meta["size_categories"] = [size_category(summary.rows)]
    meta["task_categories"] = TASK_CATEGORIES
    meta["tags"] = TAGS
    meta["configs"] = [{"config_name": "default", "data_files": [{"split": "train", "path": PARQUET}]}]
    assert summary.schema is not None
    meta["dataset_info"] = {
        "features": [hf_feature(f.name, f.type) for f in summary.schema],
        "splits": [{"name": "train", "num_examples": summary.rows}],
    }
    return meta


def render_card(card: CardInputs) -> str:
    summary, settings, metrics = card.summary, card.settings, card.metrics
    assert summary.schema is not None
    parts = ["---", yaml.safe_dump(header(card), sort_keys=False, allow_unicode=True, width=100).rstrip(),
             "---", ""]
    add = parts.append

    add(f"# {PRETTY_NAME}\n")
    add(f"{summary.rows:,} episodes in which several LLM agents work on one task (negotiations, agent teams, "
        "debates) or answer the same multi-turn conversation, each annotated with token-level communication logs, "
        "per-turn latent states "
        "of a low-rank recurrent coordinator and coordination outcome labels (LLM judges, rules"
        f"{', an LLM labeler' if settings.llm_enabled else ''}). Annotation version "
        f"`{settings.annotation_version}`; built by the `release` stage of the coordset DVC pipeline.\n")
    add(_table(["source", "episodes"], sorted(summary.sources.items())) + "\n")
    dates = (f"Episode dates (UTC, from the data) run from {summary.first_date} to {summary.last_date}"
             if summary.first_date else "No episode has a timestamp")
    add(f"{dates}; {summary.undated} episode(s) have none. Latent split: "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(summary.splits.items())) + ".\n")

    add("## Files\n")
    add(f"- `{PARQUET}`: one row per episode, sorted by `episode_id` (the fields below). "
        "`datasets.load_dataset(\"parquet\", data_files=\"coordset.parquet\")` or `pandas.read_parquet`.")
    add("- `coordset.jsonl`: the same episodes, one JSON object per line: `input` (the user messages), `context` "
        "(`agents`, `agent_models`, `messages`, `responses` per agent, `winner` (head-to-head sources), "
        "`token_usage` with `per_call`, `totals` and "
        "`communication_efficiency`, `latent_states` with `per_turn` vectors, `method`, `rank`, `split` and the "
        "held-out `error` figures, `coordination_outcomes` with `native`, `judges`, `rule` and `llm`, each with the "
        "`method` that made it), `output` (the outcome and `coordination_success`) and `metadata` (`source`, "
        "`licence`, `annotation_version`, `date`, ids, category, language).")
    add("- `README.md`: this card.\n")

    add("## Fields\n")
    groups = {f.name: f.group for f in FIELDS}
    rows = [(f"`{f.name}`", f"`{arrow_type_name(f.type)}`", groups.get(f.name, "llm"), describe(f.name))
            for f in summary.schema]
    add(_table(["field", "type", "group", "meaning"], rows) + "\n")

    add("## Sources\n")
    for name in sorted(summary.sources):
        add(_source_section(REGISTRY[name], summary.sources[name], metrics))
    add("## How each annotation was made\n")
    add(_tokens_section(settings, card.params))
    add(_latent_section(settings, card.params, metrics.get("latent", {}), LATENT_BASELINES))
    add(_judges_section(metrics.get("labels", {})))
    add(_rules_section(settings))
    add(_llm_section(settings, card.params))

    add("## Params of this build\n")
    relevant = {k: card.params[k] for k in PARAM_KEYS if k in card.params}
    add("From `params.yaml`:\n\n```yaml\n" + yaml.safe_dump(relevant, sort_keys=False, allow_unicode=True).rstrip()
        + "\n```\n")

    add("## Metrics of this build\n")
    for name in ("normalize", "enrich", "latent", "labels"):
        data = dict(metrics.get(name) or {})
        if name == "labels" and isinstance(data.get("judges"), dict):  # per-judge tables are in the judges section
            data["judges"] = {k: v for k, v in data["judges"].items() if k not in ("consistency", "cohen_kappa")}
        add(f"### metrics/{name}.json\n")
        add(_table(["metric", "value"], ((f"`{k}`", v) for k, v in flatten(data))) + "\n")

    add("## Sources and licences\n")
    rows = []
    for name, source in REGISTRY.items():
        where = source.homepage + (f" at `{source.revision}`" if source.revision else "")
        rows.append((f"`{name}`", summary.sources.get(name, 0), source.title, where, source.licence))
    add(_table(["source", "episodes here", "what", "where (pinned)", "licence"], rows) + "\n")
    used = sorted(summary.sources)
    if any(REGISTRY[s].licence.startswith("GPL") for s in used):
        add("This build includes GPL-3.0 data (`mad_debate`). GPL-3.0 is a copyleft licence: a release that "
            "includes it, and derived data that is distributed, must be made available under GPL-3.0 too, with its "
            "source; it cannot be relicensed more permissively. Leave `mad_debate` out of `sources.use` for a "
            "release under the other sources' permissive licences.\n")
    add("This build contains " + (", ".join(f"`{s}` ({REGISTRY[s].licence})" for s in used) if used else "no source")
        + ". Each JSON line's `metadata.licence` names its source's licence; the annotations added here follow "
        "the licence of the episode they annotate. Judge verdicts and grades are the source's (mt_bench_repro).\n")

    add("## Known limitations\n")
    add("\n".join(f"- {s}" for s in limitations(card)) + "\n")
    return "\n".join(parts)


BILLING_WORDS = {
    "own_thread": "the user turns so far and the agent's own earlier replies (the agents answer in parallel)",
    "shared_history": "every earlier message of the episode, as a group-chat framework re-sends it",
    "logged_prompt": "that call's prompt, as the framework logged it or as rebuilt from its log",
}
assert set(BILLING_WORDS) == set(BILLING)


def _source_section(source: Source, episodes: int, metrics: dict[str, dict[str, Any]]) -> str:
    text = (f"### `{source.name}` ({episodes:,} episodes, {source.licence})\n\n{source.card}\n\n"
            f"- A turn is {source.turn}.\n- An agent's call is billed for {BILLING_WORDS[source.billing]}.\n")
    native = ((metrics.get("labels") or {}).get("native_outcomes") or {}).get(source.name)
    if native:
        text += "- Outcomes: " + ", ".join(f"`{k}` {v:,}" for k, v in sorted(native["outcome"].items())) + ".\n"
        if native.get("success_rate") is not None:
            text += f"- Success rate where known: {native['success_rate']:.3f}.\n"
    error = (((metrics.get("enrich") or {}).get("by_source") or {}).get(source.name) or {}).get("vs_logged_usage")
    if error:
        for kind, e in sorted(error.items()):
            text += (f"- Our {kind} token counts vs the usage the API logged ({e['calls']:,} calls): median absolute "
                     f"relative error {e['median_abs_relative_error']:.3f}, 90th percentile "
                     f"{e['p90_abs_relative_error']:.3f}, median signed {e['median_relative_error']:+.3f}.\n")
    return text


def _tokens_section(settings: ReleaseSettings, params: dict[str, Any]) -> str:
    return (
        "### Token accounting (enrich)\n\n"
        f"Every message is tokenized with tiktoken `{settings.encoding}`. An agent's call is billed for what that "
        "agent saw, by its source's rule (see Sources): each re-sent message with "
        f"`tokens_per_message` = {settings.tokens_per_message} plus the role's tokens, and `tokens_per_reply` = "
        f"{settings.tokens_per_reply} to prime the reply. `input_tokens` is that billed prompt, `output_tokens` "
        "the completions, `avg_tokens_per_turn` = total / turns, `input_output_ratio` = input / total, "
        "`coordination_overhead` = (max - min) of the agents' completion tokens / total. Completion tokens include "
        "an agent's private reasoning where the source logs it. One tokenizer stands in for every model's own, so "
        "the counts approximate what each provider billed; where a source logged the real usage (ChatDev), its "
        "section above reports how far the counts are from it.\n")


def _latent_section(settings: ReleaseSettings, params: dict[str, Any], latent: dict[str, Any],
                    baselines: Iterable[LatentBaseline]) -> str:
    lat = settings.latent
    text = (
        "### Embeddings and latent states (embed, latent)\n\n"
        f"Every distinct message text is embedded once with sentence-transformers `{settings.embed_model}` "
        f"(long texts: `{settings.embed_long_text}`, backend `{settings.embed_backend}`). The recurrent coordinator "
        f"(`latent.cell` = `{settings.cell}`, state width `rank` = {settings.rank}) reads each episode's messages in "
        "order (each with a feature saying who spoke: user, tool or the agent's slot) and from its state "
        "reconstructs the current message embedding and predicts the next; `latent_per_turn` is its state after "
        "each turn's last message. Its cell is trained by Adam "
        f"(learning rate {lat.learning_rate}, weight decay {lat.weight_decay}, seed {lat.seed}) for at most "
        f"{lat.epochs} epochs on the training groups (questions, tasks, games, projects), stopping after "
        f"{lat.patience} epochs without a lower loss on validation groups set aside from them "
        f"({_share(lat.validation_fraction)} of each source's). In that first pass the PCA initialisation and the "
        "memoryless ridge are fitted without the validation groups, so epoch 0 (the initial cell: the PCA, plus a "
        f"share {lat.memory_init} of the previous state) is judged out of sample like every later epoch; the number "
        "of epochs with the lowest validation loss is then trained again, the same way, on all training groups. "
        f"{_share(lat.holdout_fraction)} of the groups are held out, and "
        "every figure below is measured on them. "
        "The state *is* the rank-dimensional latent and the read-outs are linear, so its reconstruction is "
        "directly comparable with a PCA of the same rank; the `linear` cell (h = A h + B x) contains that PCA as a "
        "special case, the `gru` cell adds gating so the state can keep context while each message is written in.\n\n"
    )
    text += "".join(f"{p}\n\n" for p in latent_training_sentences(latent, lat))
    targets = latent_targets(latent)
    if targets:
        text += ("What issue 11 asked of the latent states, and where this build stands (from metrics/latent.json; "
                 "every group held out once, 95% bootstrap intervals over held-out groups, a target met only where "
                 "the interval excludes zero on the better side):\n\n"
                 + "\n".join(f"- {t.text}" for t in targets) + "\n\n")
    text += ("The published model on its own held-out split (fold 0), all sources pooled (top level of "
             "metrics/latent.json):\n\n")
    findings = latent_findings(latent, baselines)
    text += "\n".join(f"- {s}" for s in findings) if findings else "- metrics/latent.json reports no comparison."
    rows = latent_source_rows(latent.get("by_source") or {})
    if rows:
        text += ("\n\nPer source, every group held out once (`by_source` in metrics/latent.json); each row is a "
                 "model-minus-baseline difference with its 95% bootstrap interval over held-out groups, and a win "
                 "only where the interval excludes zero on the better side:\n\n"
                 + _table(["source", "figure", "model", "baseline", "difference [95% interval]", "verdict"], rows))
    return text + "\n"


# What a held-out group is, per source (the card's words; the split is by `group_id`).
GROUP_KINDS = {"mt_bench_repro": "questions", "who_when": "tasks", "llm_deliberation": "game configurations",
               "chatdev": "projects", "fastchat_mt_bench": "questions", "mad_debate": "questions",
               "debate": "questions"}
FEW_HELD_OUT_GROUPS = 5  # below this a group bootstrap is coarse (coordset.latent.evaluation.FEW_GROUPS)
RECONSTRUCTION_SHARE = 0.95  # issue 11: reconstruction within 5% of PCA's explained variance
TRAINING_MINUTES = 5  # issue 11: the latent stage on the default build, on the 2-core machine


@dataclass(frozen=True)
class LatentTarget:
    """One of issue 11's targets for one source: met (True), missed (False) or not judged (None), in words."""

    name: str
    source: str | None
    met: bool | None
    text: str


def latent_training_sentences(latent: dict[str, Any], lat: LatentSettings) -> list[str]:
    """What early stopping kept, per fit, from the metrics: a cell that never left its initialisation is said so."""
    evaluation = latent.get("evaluation") or {}
    best = list(evaluation.get("best_epochs") or ([latent["best_epoch"]] if "best_epoch" in latent else []))
    if not best:
        return []
    listed = ", ".join(str(b) for b in best)
    fits = (f"{len(best)} fits (the published model, then the {len(best) - 1} cross-fits that score the other "
            "held-out groups)" if len(best) > 1 else "the published model's fit")
    if any(best) and best[0]:
        return [f"Best epoch per fit, over {fits}: {listed}."]
    kept = ("The published cell is therefore **untrained**: the PCA filter its training started from, each state "
            "a (scaled) PCA code of the current message plus a decaying trace (share "
            f"{lat.memory_init}) of the earlier ones. What is fitted to the data are the read-outs, in closed form: "
            "the reconstruction map, the memoryless ridge f and the map G that reads what history adds to the "
            "state.")
    if any(best):
        return [f"Best epoch per fit, over {fits}: {listed}. The published model's is 0. {kept}"]
    return [f"**No training epoch improved on the initial cell**: best epoch per fit, over {fits}: {listed}, i.e. "
            f"in every fit the validation loss was lowest before the first epoch. {kept}"]


def _interval(c: dict[str, Any]) -> str:
    ci = c.get("ci95")
    if not ci or None in ci:
        return f"difference {_num(c.get('difference'))}, no interval"
    return f"difference {_num(c.get('difference'))} [95% interval {_num(ci[0])}, {_num(ci[1])}]"


def _verdict(met: bool | None) -> str:
    return "not judged" if met is None else "**met**" if met else "**missed**"


def _coarse(source: str, res: dict[str, Any]) -> str:
    n = res.get("groups")
    if isinstance(n, int) and n < FEW_HELD_OUT_GROUPS:
        return (f" Only {n} held-out groups ({GROUP_KINDS.get(source, 'groups')}) for `{source}`: its intervals are "
                "coarse.")
    return ""


def latent_targets(latent: dict[str, Any]) -> list[LatentTarget]:
    """Issue 11's targets, each met or missed per multi-agent source, with the numbers and intervals of
    metrics/latent.json ``by_source``. Head-to-head sources (agents never talk to each other) are not target
    sources; their figures stay in the per-source table."""
    by_source = latent.get("by_source") or {}
    multi = [s for s in sorted(by_source) if s in REGISTRY and not REGISTRY[s].parallel]
    out: list[LatentTarget] = []
    for source in multi:
        res = by_source[source]
        kind = GROUP_KINDS.get(source, "groups")
        held = f"{res.get('groups')} held-out {kind}"
        ridge = (res.get("next_message") or {}).get("vs_memoryless_ridge")
        if ridge:
            gain = (res.get("next_message") or {}).get("relative_gain_over_ridge")
            lower = f", {_share_fine(gain)} lower" if isinstance(gain, (int, float)) else ""
            met = bool(ridge.get("win"))
            out.append(LatentTarget("next message beats the memoryless ridge", source, met, (
                f"`{source}`, next message vs the learned memoryless predictor (ridge on the current message and "
                f"its speaker), {held}: error {_num(ridge.get('model'))} vs {_num(ridge.get('baseline'))}{lower}; "
                f"{_interval(ridge)}: {_verdict(met)}.{_coarse(source, res)}")))
        recon = res.get("reconstruction") or {}
        ev, share = recon.get("explained_variance_vs_pca"), recon.get("share_of_pca_explained_variance")
        if ev and isinstance(share, (int, float)):
            met = share >= RECONSTRUCTION_SHARE
            out.append(LatentTarget("reconstruction within 5% of PCA", source, met, (
                f"`{source}`, reconstruction: explained variance {_num(ev.get('model'))} vs "
                f"{_num(ev.get('baseline'))} for the PCA of the same rank, {_share_fine(share)} of it (target: at "
                f"least {_share(RECONSTRUCTION_SHARE)}); {_interval(ev)}: {_verdict(met)}.")))
        probes = [(path, c) for path, c in _comparisons(res.get("probes") or {})
                  if path and path[-1] == "latent_vs_memoryless"]
        if probes:
            met = any(bool(c.get("win")) for _, c in probes)
            figures = "; ".join(f"{' / '.join(path[:-1])} {_num(c.get('model'))} vs {_num(c.get('baseline'))} "
                                f"({_interval(c)})" for path, c in probes)
            paper = (res.get("probes") or {}).get("who_when_paper_best_llm")
            beside = (" For reference, the Who&When paper's best LLM method: agent "
                      f"{_share_fine(paper.get('agent_accuracy'))}, step {_share_fine(paper.get('step_accuracy'))} "
                      "accuracy (protocols differ: zero-shot judging of each log vs this supervised probe scored on "
                      "held-out tasks)." if paper else "")
            out.append(LatentTarget("a native-label probe beats its same-size memoryless baseline", source, met, (
                f"`{source}`, native-label probes from the latent trajectory vs the same probes on PCA codes of the "
                f"same messages (same size, no memory), {held}: {figures}: {_verdict(met)}"
                f"{'' if met else ' (no interval excludes zero on the better side)'}.{_coarse(source, res)}{beside}")))
    if "mt_bench_repro" in by_source:
        out.append(LatentTarget("agreement-level probe", "mt_bench_repro", None, (
            "`mt_bench_repro` is head-to-head (the two models never read each other), so no target above applies "
            "to it; its winner probe is in the table below. The agreement-level probe issue 11 lists for it is not "
            "made: the agreement level is a rule label of the label stage, which runs after this one.")))
    if by_source:
        out.append(LatentTarget("training time", None, None, (
            f"The latent stage on the default build trains in under {TRAINING_MINUTES} minutes on the 2-core machine: "
            "not judged from the metrics. Wall time is left out of metrics/latent.json, which must reproduce byte "
            "for byte; the stage prints it (`latent: trained N models in S s`) and BENCHMARKS.md's default-build "
            "table records it.")))
    return out


def _share_fine(value: Any) -> str:
    """A share in percent: one decimal from 10% up (100.2%), else three significant digits (gains over the ridge
    are as small as 0.03%)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{100 * value:.1f}%" if abs(value) >= 0.1 else f"{100 * value:.3g}%"
    return _number(value)


def _comparisons(node: Any, path: tuple[str, ...] = ()) -> Iterable[tuple[tuple[str, ...], dict[str, Any]]]:
    """Every model-vs-baseline comparison in a metrics tree: a dict with model, baseline, difference, ci95, win."""
    if isinstance(node, dict):
        if {"model", "baseline", "difference", "ci95", "win"} <= set(node):
            yield path, node
            return
        for key, value in sorted(node.items()):
            if key != "by_position":
                yield from _comparisons(value, (*path, key))


def latent_source_rows(by_source: dict[str, Any]) -> list[tuple[Any, ...]]:
    """One row per comparison of the latent model with a baseline (baseline-vs-baseline rows left out)."""
    rows = []
    for source, figures in sorted(by_source.items()):
        for path, c in _comparisons(figures):
            if path[-1].startswith(("memoryless_", "ridge_")):
                continue
            interval = c["ci95"]
            if not interval or None in interval:  # too few held-out groups for an interval
                rows.append((f"`{source}`", " / ".join(path), _num(c["model"]), _num(c["baseline"]),
                             f"{_num(c['difference'])} (no interval)", "not measurable"))
                continue
            lo, hi = interval
            verdict = "**wins**" if c["win"] else ("loses" if lo > 0 or hi < 0 else "no difference shown")
            rows.append((f"`{source}`", " / ".join(path), _num(c["model"]), _num(c["baseline"]),
                         f"{_num(c['difference'])} [{_num(lo)}, {_num(hi)}]", verdict))
    return rows


def _num(value: Any) -> str:
    return "–" if value is None else f"{float(value):.4g}"


def _judges_section(labels: dict[str, Any]) -> str:
    judges = labels.get("judges") or {}
    text = (
        "### Imported LLM judges and their consensus (label)\n\n"
        "Each judge compared the two answers in both orders (AB, then the pair swapped as BA). Its verdict counts "
        "only when both orders name the same model or both say tie; otherwise it is `inconsistent` (position "
        "bias), and an order the judge's text did not yield is `error`. The consensus is the plurality of the "
        "consistent verdicts on the last turn each judge saw: two outcomes sharing the top count make a `tie`, no "
        "consistent verdict makes it `unknown`. Other sources keep their own outcome (see Sources).\n\n"
    )
    text += "\n".join(f"- {s}" for s in judge_findings(labels)) + "\n"
    consistency = judges.get("consistency") or {}
    if consistency:
        text += "\nPer judge (all verdicts):\n\n" + _table(
            ["judge", "judge_id", "verdicts", "valid", "unparsed", "inconsistent", "inconsistency rate"],
            [(k, v.get("judge_id"), v.get("n_verdicts"), v.get("n_valid"), v.get("n_error"), v.get("n_inconsistent"),
              v.get("inconsistency_rate")) for k, v in sorted(consistency.items())]) + "\n"
    cohen = judges.get("cohen_kappa") or {}
    if cohen:
        rows = [(a, b, v.get("kappa"), v.get("n_episodes")) for a, row in sorted(cohen.items())
                for b, v in sorted(row.items())]
        text += ("\nCohen's kappa for every pair of judges, on the episodes both judged consistently:\n\n"
                 + _table(["judge", "judge", "kappa", "episodes"], rows) + "\n")
    return text


def _rules_section(settings: ReleaseSettings) -> str:
    t = settings.thresholds
    rows = [("coordination_overhead", t.coordination_overhead, "success needs overhead strictly below it"),
            ("agreement_low", t.agreement_low, "similarity below it: `low`"),
            ("agreement_high", t.agreement_high, "similarity at or above it: `high`"),
            ("agreement_drop", t.agreement_drop, "event when similarity falls by more than it"),
            ("length_ratio", t.length_ratio, "event when the longest reply has at least this many times the tokens")]
    return ("### Rule labels (label)\n\nThresholds used (`thresholds` in params.yaml):\n\n"
            + _table(["threshold", "value", "rule"], rows) + "\n\n"
            "`rule_outcome` is the agent with the higher mean 1-10 judge grade (`tie` when shared, `unknown` without "
            "grades); `efficiency_score` is that mean grade per 1k completion tokens. `coordination_success`: for "
            "head-to-head sources a named winner with `coordination_overhead` below its threshold; for "
            "conversations among agents the source's own outcome is a success (null when unknown). Per turn, "
            "`agent_similarity` is the mean pairwise cosine similarity of the agent messages' embeddings in that turn "
            "(`unknown` level with fewer than two), and the events mark an agreement drop since the previous turn and "
            "a length imbalance between the longest and shortest agent message.\n")


def llm_sentences(llm: dict[str, Any] | None, llm_vs: dict[str, Any] | None) -> list[str]:
    """What the LLM labels measure against the sources' own labels, in numbers."""
    if not llm:
        return []
    sentences = []
    for key, by_kind in (llm.get("quality") or {}).items():
        parts = []
        for kind, q in sorted(by_kind.items()):
            text = f"{kind}: {q.get('n_valid')} valid of {q.get('n_labeled')}"
            if kind == "pairwise":
                text += f", both-orders inconsistency {_number(q.get('inconsistency_rate'))}"
            parts.append(text)
        sentences.append(f"LLM labels (`{key}`): " + "; ".join(parts) + ".")
    for source, entry in sorted((llm.get("vs_native") or {}).items()):
        for key, figures in sorted(entry.items()):
            if not isinstance(figures, dict) or key in ("attribution_baselines", "paper_best_method"):
                continue
            success = figures.get("success_vs_native") or {}
            if success.get("n"):
                sentences.append(f"{source}, `{key}`: success judgment agrees with the source's outcome on "
                                 f"{_number(success.get('accuracy'))} of {success['n']} episodes (Cohen's kappa "
                                 f"{_number(success.get('kappa'))}).")
            for subset, att in sorted((figures.get("failure_attribution") or {}).items()):
                base = (entry.get("attribution_baselines") or {}).get(subset, {})
                sentences.append(
                    f"{source} ({subset}), `{key}`: failure attribution on {att.get('n')} logs: agent "
                    f"{_number(att.get('agent_accuracy'))}, step {_number(att.get('step_accuracy'))} (random: agent "
                    f"{_number(base.get('random_agent_accuracy'))}, step {_number(base.get('random_step_accuracy'))};"
                    f" majority: agent {_number(base.get('majority_agent_accuracy'))}, step "
                    f"{_number(base.get('majority_step_accuracy'))}).")
            judged = figures.get("vs_judges_consensus") or {}
            if judged.get("n"):
                sentences.append(f"{source}, `{key}`: preferred model agrees with the judges' consensus on "
                                 f"{_number(judged.get('accuracy'))} of {judged['n']} episodes (Cohen's kappa "
                                 f"{_number(judged.get('kappa'))}).")
        paper = entry.get("paper_best_method")
        if paper:
            sentences.append("For reference, the Who&When paper's best method reaches "
                             f"{_number(paper['agent_accuracy'])} agent-level and {_number(paper['step_accuracy'])} "
                             f"step-level accuracy ({paper['protocol']}).")
    among = llm.get("among_models") or {}
    if among:
        sentences.append("Agreement among the models (Fleiss' kappa): " + ", ".join(
            f"{name} {_number(v.get('fleiss_kappa'))} on {v.get('n_episodes')}" for name, v in sorted(among.items()))
            + ".")
    if llm_vs and llm_vs.get("n"):
        sentences.append(f"The LLM consensus agrees with the judges' consensus on {_number(llm_vs.get('accuracy'))} "
                         f"of {llm_vs['n']} head-to-head episodes (Cohen's kappa {_number(llm_vs.get('kappa'))}).")
    return sentences


def _llm_section(settings: ReleaseSettings, params: dict[str, Any]) -> str:
    if not settings.llm_enabled:
        return ("### LLM-assisted labels\n\nNot enabled in this build (`label.llm.enabled: false`): there are no "
                "`llm_*` columns and every JSON line has `coordination_outcomes.llm: null`.\n")
    models = ", ".join(f"`{m}`" for m in settings.llm_models or ())
    return ("### LLM-assisted labels (label)\n\n"
            f"Models {models} through an OpenAI-compatible endpoint; `llm_served_by` names, per episode, what served "
            "the answers (`local` for a server on the building machine, else the endpoint's host) and the model id "
            "it reported. The conversation is sent as delimited, untrusted data and answered with a JSON schema; an "
            "answer that breaks it is asked again and then recorded invalid. Two agents answering in parallel are "
            "judged **pairwise**, once in each agent order (success 0-10, agreement, efficiency 0-10, the preferred "
            "agent, a short reason; `consistent` when both orders agree). A conversation among agents is judged as a "
            "**group**: the same scores, `success` or `failure`, and the failure attributed to one of its agents "
            "and one of its message positions (Who&When's all-at-once protocol, without the ground-truth answer); "
            "the schema allows only the episode's agents and positions. A conversation longer than "
            "`label.llm.max_conversation_chars` is cut: every message longer than a common cap keeps its first "
            "characters, the cap being the largest that fits (`llm_chars_cut`). With several models, each labels "
            "on its own (`data/labels/llm_labels.parquet`, one row per episode and model) and the `llm_*` columns "
            "hold their consensus (majority; scores averaged). Answers are kept by model, prompt and content, so "
            "none is paid twice. How far the labels agree with the sources' own is in the label metrics above.\n")


def limitations(card: CardInputs) -> list[str]:
    summary, metrics = card.summary, card.metrics
    latent, labels = metrics.get("latent", {}), metrics.get("labels", {})
    items = []
    beaten = not_beaten(latent)
    if beaten:
        grouped: dict[str, list[str]] = {}
        for b in beaten:
            grouped.setdefault(b.against, []).append(b.what)
        items.append("The latent states are a **negative result** in this build: the recurrent model does not beat "
                     + "; ".join(f"{against} ({', '.join(whats)})" for against, whats in grouped.items())
                     + ". Use them as a compact trace of the conversation, not as a model that reads it better than "
                     "those baselines.")
    best = (latent.get("evaluation") or {}).get("best_epochs") or []
    if best and best[0] == 0:  # the first fit is the published model
        items.append("The published latent cell is untrained: no training epoch beat the initial cell (the PCA of "
                     "the training messages with a small carry-over of the previous state) on validation groups, so "
                     "`latent_per_turn` is a PCA code of the turn's last message plus a decaying trace of earlier "
                     "ones.")
    missed = [t for t in latent_targets(latent) if t.met is False]
    if missed:
        items.append("Issue 11's targets for the latent states missed in this build: "
                     + "; ".join(f"{t.name} (`{t.source}`)" for t in missed)
                     + ". The latent section above gives each figure with its interval.")
    items += [s for s in judge_findings(labels) if "**" in s]
    parallel = sorted(s for s in summary.sources if REGISTRY[s].parallel and s != "local")
    if parallel:
        items.append(f"In the head-to-head sources ({', '.join(parallel)}) the agents never talk to each other: each "
                     "model answers the same user turns independently, so agreement and coordination labels compare "
                     "independent answers, and `billed_prompt_tokens` assumes each agent sees only its own earlier "
                     "replies.")
    shared = sorted(s for s in summary.sources if REGISTRY[s].billing == "shared_history")
    if shared:
        items.append(f"For {', '.join(shared)} the billed prompt counts the episode's earlier messages only: the "
                     "frameworks' system prompts and instructions are not in the logs, so real prompts were larger "
                     "(see `vs_logged_usage` in metrics/enrich.json where a source logged its usage).")
    items.append(f"Token counts use one tokenizer (`{card.settings.encoding}`) for every model, not each model's "
                 "own: they approximate what each provider would bill.")
    judges = sorted((labels.get("judges") or {}).get("consistency") or {})
    if judges:
        items.append(f"The judges are LLMs ({', '.join(judges)}) with position bias; the consensus is the majority of "
                     "their consistent verdicts, not a human label.")
    items.append("`efficiency_score` and `rule_outcome` exist only where a source has 1-10 grades (mt_bench_repro); "
                 "elsewhere they are null and `unknown`.")
    if summary.undated:
        items.append(f"{summary.undated} episode(s) have no timestamp, so no `date`.")
    if summary.first_date:
        items.append("`date` is when the source recorded the answers (mt_bench_repro: the reproduction run's answer "
                     "timestamps), not when the questions were written.")
    skipped = (metrics.get("normalize") or {}).get("skipped_total")
    if skipped:
        items.append(f"{skipped} source record(s) were skipped by normalize (`normalize.on_bad_record: skip`); "
                     "see metrics/normalize.json for the reasons.")
    if {"mt_bench_repro", "fastchat_mt_bench"} & set(summary.sources):
        items.append("MT-Bench has only 80 questions (8 categories): episodes of the same question share their user "
                     "turns, so rows are not independent; split by `group_id` (as the latent split does).")
    if "fastchat_mt_bench" in summary.sources:
        items.append("fastchat_mt_bench episodes have no judges and no human vote: their outcome is `unknown`.")
    if "chatbot_arena" in summary.sources:
        items.append("chatbot_arena conversations may be unsafe or offensive and their model outputs are "
                     "CC-BY-NC-4.0 (non-commercial).")
    return items
