"""release: every stage's output joined into the published dataset under data/release/.

Reads data/normalized/{episodes,messages}.parquet, data/enriched/{episodes,turns}.parquet,
data/latent/latent_states.parquet, data/labels/{episode_labels,turn_labels,judge_episode_verdicts}.parquet
and metrics/{normalize,enrich,latent,labels}.json. Writes data/release/coordset.parquet (one row per
episode), data/release/coordset.jsonl (one JSON object per episode) and data/release/README.md (the
dataset card).
"""

from __future__ import annotations

from coordset.params import load_params
from coordset.release.card import CardInputs, render_card
from coordset.release.inputs import read_inputs
from coordset.release.settings import OUT_DIR, release_settings
from coordset.release.write import write_release
from stages._entry import run


def main() -> None:
    params = load_params()
    settings = release_settings(params)  # every param is checked before any data is read
    inputs = read_inputs(settings)
    write_release(inputs, settings, OUT_DIR, render_card=lambda summary: render_card(
        CardInputs(summary=summary, settings=settings, params=params, metrics=inputs.metrics)))


if __name__ == "__main__":
    run(main)
