"""enrich: token counts per message and per API call, billed prompts, and communication-efficiency figures."""
