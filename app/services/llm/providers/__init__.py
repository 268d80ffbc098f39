"""One module per provider; the OpenAI-wire ones share `openai_compatible`."""
