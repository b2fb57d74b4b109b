"""Per-step metric logs: one CSV and one JSON-lines file per stream.

``MetricsLog(directory, "metrics")`` writes ``metrics.csv`` and
``metrics.jsonl``; each :meth:`MetricsLog.log` appends a row to both and
flushes. The CSV's columns are those of the first row (later keys go to the
JSON file only). Opening with ``resume_step=k`` keeps the rows with
``step <= k`` of existing files (a crashed run may have logged steps past its
last checkpoint) and appends after them; otherwise existing files are
replaced.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os

__all__ = ["MetricsLog"]


def _jsonable(v):
    if hasattr(v, "item") and getattr(v, "size", 1) == 1:
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class MetricsLog:
    """Append-only CSV + JSON-lines metric log (see the module docstring)."""

    def __init__(self, directory, name="metrics", *, resume_step=None):
        self.rows = []
        self.columns = None
        self.csv_path = self.jsonl_path = None
        if directory is None:
            return
        os.makedirs(directory, exist_ok=True)
        self.csv_path = os.path.join(directory, f"{name}.csv")
        self.jsonl_path = os.path.join(directory, f"{name}.jsonl")
        if resume_step is not None and os.path.exists(self.jsonl_path):
            with open(self.jsonl_path, encoding="utf-8") as f:
                for line in f:
                    line = line.strip()
                    if not line:
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:  # a torn last line from a crash
                        continue
                    if row.get("step", 0) <= resume_step:
                        self.rows.append(row)
        if self.rows:
            self.columns = list(self.rows[0])
        self._rewrite()

    def _rewrite(self):
        with open(self.jsonl_path, "w", encoding="utf-8") as f:
            for row in self.rows:
                f.write(json.dumps(row) + "\n")
        with open(self.csv_path, "w", encoding="utf-8", newline="") as f:
            if self.columns:
                w = csv.writer(f)
                w.writerow(self.columns)
                for row in self.rows:
                    w.writerow([row.get(c, "") for c in self.columns])

    def log(self, row):
        """Append one row (a dict with at least ``step``)."""
        row = {k: _jsonable(v) for k, v in row.items()}
        self.rows.append(row)
        if self.jsonl_path is None:
            return
        with open(self.jsonl_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        new_file = self.columns is None
        if new_file:
            self.columns = list(row)
        buf = io.StringIO()
        w = csv.writer(buf)
        if new_file:
            w.writerow(self.columns)
        w.writerow([row.get(c, "") for c in self.columns])
        with open(self.csv_path, "a", encoding="utf-8", newline="") as f:
            f.write(buf.getvalue())
