"""A small JSONL corpus of 40 documents of varied lengths."""

import json

DOCS = [f"document {i}: " + "lorem ipsum dolor " * (i % 7 + 1) for i in range(40)]


def corpus(tmp_path):
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS))
    return tmp_path / "docs.jsonl"
