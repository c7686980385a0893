"""latent: embeddings -> per-turn latent states (data/latent/), the fitted model, metrics/latent.json."""

from __future__ import annotations

from pathlib import Path

from coordset import atomic
from coordset.latent import latent_settings
from coordset.latent.build import STATES, build_latent, read_latent_inputs
from coordset.numerics import numerics_mode, pin
from coordset.params import load_params
from stages._entry import run

OUT = Path(STATES)
MODEL = Path("models/latent_model.pt")
DEAL_CURVE = "metrics/latent_deal_curve.csv"


def main() -> None:
    params = load_params()
    pin(numerics_mode(params))  # stages/__init__.py pinned the numeric code paths; this refuses if it could not
    settings = latent_settings(params)  # bad params fail here, before any data is read
    built = build_latent(read_latent_inputs(), settings)
    atomic.write_parquet(OUT, built.states)
    atomic.write_bytes(MODEL, built.model_pt)
    atomic.write_json("metrics/latent.json", built.metrics)
    atomic.write_text("metrics/latent_loss.csv", built.loss.to_csv(index=False))
    atomic.write_text("metrics/latent_rank.csv", built.rank_rows.to_csv(index=False))
    atomic.write_text(DEAL_CURVE, built.deal_curve.to_csv(index=False))


if __name__ == "__main__":
    run(main)
