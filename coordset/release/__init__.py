"""release: every stage's output joined into the published dataset (Parquet, JSON lines) and its card."""
