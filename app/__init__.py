"""LLM backend: one authenticated API over LM Studio and cloud LLMs."""
