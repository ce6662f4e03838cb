"""A small English corpus that ships with every Python: the pydoc topic texts
(`pydoc_data.topics`, ~0.47 MB). Used by `make demo` and the tests so they need no network."""

from __future__ import annotations

import json
import os


def pydoc_documents(max_chars: int = 3000) -> list[str]:
    """Split the pydoc topics into documents of whole paragraphs, at most ~max_chars each,
    in a fixed order (sorted topic names) so every build is identical."""
    from pydoc_data.topics import topics

    docs: list[str] = []
    for name in sorted(topics):
        paragraphs = [p.strip() for p in topics[name].split("\n\n") if p.strip()]
        cur: list[str] = []
        size = 0
        for p in paragraphs:
            if cur and size + len(p) > max_chars:
                docs.append("\n\n".join(cur))
                cur, size = [], 0
            cur.append(p)
            size += len(p) + 2
        if cur:
            docs.append("\n\n".join(cur))
    return docs


def write_jsonl(texts, path) -> str:
    """Write texts as `{"text": ...}` lines (atomically); returns the path."""
    from golfpack.fileio import atomic_write_bytes

    body = "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts)
    atomic_write_bytes(path, body.encode("utf-8"), force=True)
    return os.fspath(path)
