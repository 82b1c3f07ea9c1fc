"""Helpers for hostile-input tests: the worker's command run as a child process under a wall
clock limit, with the peak RSS of its biggest process measured, and the independent verifier."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import ROOT

# Runs argv[1:], then prints the largest max-RSS (KiB) of any waited-for descendant: the worker
# (one process, its workers are threads) is reaped by the time the command exits.
_RSS_WRAPPER = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.run(sys.argv[1:]).returncode\n"
    "sys.stderr.write('\\n@@maxrss %d\\n' % resource.getrusage(resource.RUSAGE_CHILDREN)"
    ".ru_maxrss)\n"
    "sys.exit(rc)\n"
)


@dataclass(frozen=True)
class WorkerRun:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    peak_rss_mib: float
    checkpoint: dict[str, object] | None

    @property
    def reason(self) -> str:
        lines = [ln for ln in self.stderr.splitlines() if "FAILED" in ln or "invalid job" in ln]
        if lines:
            return lines[-1]
        rest = self.stderr.strip().splitlines()
        return rest[-1] if rest else ""


def run_worker(
    source: Path | str,
    topic: str,
    bootstrap: str,
    *extra: str,
    checkpoint: Path | None = None,
    timeout: float = 300.0,
) -> WorkerRun:
    """``csv-ingest run SOURCE`` as a child process; fails the test if it outlives ``timeout``."""
    cmd = [
        sys.executable, "-c", _RSS_WRAPPER,
        sys.executable, "-m", "ingest_worker", "run", str(source),
        "--topic", topic, "--bootstrap-servers", bootstrap, "--parallelism", "1",
        "--log-level", "WARNING", *extra,
    ]
    if checkpoint is not None:
        cmd += ["--checkpoint", str(checkpoint)]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"the worker hung: no outcome after {timeout}s on {source}") from e
    seconds = time.monotonic() - t0
    rss_kib = 0
    stderr_lines = []
    for line in proc.stderr.splitlines():
        if line.startswith("@@maxrss "):
            rss_kib = int(line.split()[1])
        else:
            stderr_lines.append(line)
    cp = None
    if checkpoint is not None and checkpoint.exists():
        cp = json.loads(checkpoint.read_text())
    return WorkerRun(proc.returncode, proc.stdout, "\n".join(stderr_lines), seconds,
                     rss_kib / 1024, cp)
