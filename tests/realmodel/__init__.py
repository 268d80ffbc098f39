"""Real-model test tier: a real llama.cpp server (xllamacpp) serving SmolLM2-135M in-process."""
