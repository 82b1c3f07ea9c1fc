"""A remote read cut mid-transfer reads on from its last byte (pure: a stream that fails)."""

from __future__ import annotations

import io
from typing import IO

import pytest

from ingest_worker.sources import csv_source
from ingest_worker.sources.base import SourceError, transient
from ingest_worker.sources.csv_source import _RemoteStream

DATA = bytes(range(256)) * 400


class _Cut(io.BytesIO):
    """Serves ``DATA`` from an offset and raises ``error`` after ``limit`` bytes."""

    def __init__(self, offset: int, limit: int | None, error: Exception) -> None:
        super().__init__(DATA[offset:])
        self.left, self.error = limit, error

    def read(self, size: int | None = -1) -> bytes:
        if self.left is not None and self.left <= 0:
            raise self.error
        n = -1 if size is None else size
        if self.left is not None:
            n = self.left if n < 0 else min(n, self.left)
            self.left -= n
        return super().read(n)


@pytest.fixture(autouse=True)
def _no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csv_source.time, "sleep", lambda s: None)


def test_a_reset_reads_on_from_the_last_byte_returned() -> None:
    opened: list[int] = []

    def open_at(at: int) -> IO[bytes]:
        opened.append(at)
        # The first two connections are reset after 10,000 bytes each.
        limit = 10_000 if len(opened) <= 2 else None
        return _Cut(at, limit, ConnectionResetError(104, "Connection reset by peer"))

    f = _RemoteStream(open_at, "s3://b/k", 100)
    out = b"".join(iter(lambda: f.read(4096), b""))
    assert out == DATA[100:]
    assert opened == [100, 10_100, 20_100]
    assert f.tell() == len(DATA)


def test_an_error_that_is_not_a_cut_transfer_fails_at_once() -> None:
    calls: list[int] = []

    def open_at(at: int) -> IO[bytes]:
        calls.append(at)
        return _Cut(at, 10, PermissionError("denied"))

    f = _RemoteStream(open_at, "s3://b/k", 0)
    f.read(10)
    with pytest.raises(SourceError):
        f.read(10)
    assert calls == [0]


def test_a_store_that_stays_away_fails_after_the_backoff() -> None:
    def open_at(at: int) -> IO[bytes]:
        return _Cut(at, 0, TimeoutError("timed out"))

    f = _RemoteStream(open_at, "https://h/f.csv", 0)
    with pytest.raises(SourceError):
        f.read(1)


def test_transient_looks_through_the_cause_chain() -> None:
    class ProtocolError(Exception):  # urllib3's, by name
        pass

    try:
        try:
            raise ProtocolError("Connection broken")
        except ProtocolError as inner:
            raise ValueError("wrapped") from inner
    except ValueError as outer:
        assert transient(outer)
    assert not transient(ValueError("bad CSV"))
