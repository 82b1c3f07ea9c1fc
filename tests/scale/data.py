"""Files for the scale-out tests, and what Python's csv finds in them (independent of the
worker's cutter and of the plan)."""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

HEADER = "id,kind,notes,amount\n"


def _note(rng: random.Random, lines: int) -> str:
    return "\n".join(f"line {i} of a note, with a comma, and \"\"quotes\"\"" for i in
                     range(lines))


def quoted_newlines_csv(path: Path, size: int, shard_bytes: int, seed: int = 7) -> Path:
    """About ``size`` bytes of rows whose quoted ``notes`` hold newlines, with a long multi-line
    note across every naive shard boundary (``k * shard_bytes``): the first newline after
    each boundary is inside quotes, where a naive cut would split a record."""
    rng = random.Random(seed)
    boundaries = list(range(shard_bytes, size, shard_bytes))
    out = io.StringIO()
    out.write(HEADER)
    offset, i = len(HEADER), 0
    while offset < size:
        crossing = boundaries and offset + 4096 > boundaries[0]
        lines = 80 if crossing else rng.choice((1, 1, 2, 3))
        row = f'{i},{"long" if crossing else "short"},"{_note(rng, lines)}",{i % 997}.25\n'
        if crossing and offset + len(row) > boundaries[0]:
            boundaries.pop(0)
        out.write(row)
        offset += len(row.encode())
        i += 1
    path.write_text(out.getvalue())
    return path


def naive_cuts_inside_quotes(path: Path, shard_bytes: int) -> int:
    """How many naive boundaries have their first newline inside a quoted field (a record
    start there would be wrong), by Python's csv record ends."""
    data = path.read_bytes()
    ends = set(record_ends(data))
    inside = 0
    for b in range(shard_bytes, len(data), shard_bytes):
        lf = data.index(b"\n", b)
        inside += (lf + 1) not in ends
    return inside


def record_ends(data: bytes) -> list[int]:
    """Byte offsets where Python's csv ends each record (physical lines joined as it reads)."""
    ends, pos = [], 0
    lines = io.BytesIO(data).readlines()
    reader = csv.reader(line.decode() for line in lines)
    # csv pulls lines one at a time: the line count after each record gives its end.
    consumed = 0
    for _ in reader:
        while consumed < reader.line_num:
            pos += len(lines[consumed])
            consumed += 1
        ends.append(pos)
    return ends


def data_rows(path: Path) -> int:
    with path.open(newline="") as f:
        return sum(1 for _ in csv.reader(f)) - 1
