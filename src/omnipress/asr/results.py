"""A resumable results file: JSON lines written as they are produced, skipped when already there.

Each record has a key (for example method + utterance); `ResultsFile.done(key)` tells whether it is already on disk,
so a run that crashed resumes where it stopped with no duplicate. Every line is flushed and fsynced as it is
written; a torn last line (a crash mid-write) is cut off when the file is opened again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any


class ResultsFile:
    """Append-only JSONL records keyed by the values of `key_fields`."""

    def __init__(self, path: str | os.PathLike, key_fields: Sequence[str]) -> None:
        if not key_fields:
            raise ValueError("key_fields must name at least one field")
        self.path = Path(path)
        self.key_fields = tuple(key_fields)
        self._records: dict[tuple, dict[str, Any]] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        data = self.path.read_bytes()
        good = 0  # bytes of complete, parseable lines
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # torn last line
            text = line.strip()
            if text:
                try:
                    record = json.loads(text)
                except json.JSONDecodeError:
                    if good + len(line) == len(data):
                        break  # a garbled last line
                    raise ValueError(f"{self.path}: a corrupt line in the middle of the results file") from None
                self._records[self.key(record)] = record
            good += len(line)
        if good < len(data):
            with self.path.open("r+b") as handle:
                handle.truncate(good)

    def key(self, record: dict[str, Any]) -> tuple:
        missing = [f for f in self.key_fields if f not in record]
        if missing:
            raise KeyError(f"record lacks key field(s) {missing}")
        return tuple(json.dumps(record[f], sort_keys=True) for f in self.key_fields)

    def done(self, **key: Any) -> bool:
        return self.key(key) in self._records

    def get(self, **key: Any) -> dict[str, Any] | None:
        return self._records.get(self.key(key))

    def append(self, record: dict[str, Any]) -> bool:
        """Write `record` unless its key is already there; returns whether it was written."""
        key = self.key(record)
        if key in self._records:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, sort_keys=True) + "\n"
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        self._records[key] = record
        return True

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(list(self._records.values()))

    def __len__(self) -> int:
        return len(self._records)
