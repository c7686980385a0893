"""coordset: multi-LLM interaction episodes with token logs, latent states and labels."""

__version__ = "0.1.0"
