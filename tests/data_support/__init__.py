"""Fixtures the data tests build: ToRL's validation parquet from the local JSONL files, and a scripted
OpenAI-compatible teacher server."""
