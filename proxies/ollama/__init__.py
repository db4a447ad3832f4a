"""The Ollama face (11434): translation in `translate`, the NinjaAPI and NDJSON writer in `views`."""
