"""label: imported judges and their consistency, rule labels, native-outcome summaries, opt-in LLM labels."""
