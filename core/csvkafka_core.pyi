"""Type stubs of the compiled core (core/src/lib.rs)."""

class KafkaUnavailable(Exception):
    """Kafka failed for the whole retry budget, or for good."""

class TransactionFailed(KafkaUnavailable):
    """The open transaction cannot commit: abort it, make a new producer, resume from the
    last commit."""

class ProducerFenced(TransactionFailed):
    """A producer with the same transactional id took over."""

DEAD_LETTER_HEADERS: tuple[str, str, str, str, str, str, str, str]
"""The dead-letter record's header names (core/src/deadletter.rs)."""

def cut(
    buf: bytes, delimiter: int, quote: int | None, eof: bool, max_rows: int, max_bytes: int
) -> list[tuple[int, int, int]]:
    """Chunks of whole records in ``buf``: (end, rows, newlines) each."""

def murmur2(key: bytes) -> int: ...
def partition_of(name: str, key: bytes | None, count: int, sticky: int = 0) -> int: ...

ColumnTuple = tuple[str, bool, int, int, str | None, int]
"""A column: (type, nullable, precision, scale, format, zone offset in seconds)."""

def check(column: ColumnTuple, text: str, avro: bool) -> str | None: ...

class Encoder:
    def __init__(
        self,
        names: list[str],
        columns: list[ColumnTuple],
        key_columns: list[int],
        delimiter: int,
        quote: int | None,
        source: str | None = None,
        id_prefix: str | None = None,
        avro: bool = False,
        frame: bytes = b"",
        order: list[int] | None = None,
        key_frame: bytes | None = None,
    ) -> None: ...
    def encode(self, chunk: bytes, offset: int, line: int, row: int) -> Batch: ...
    def encode_fields(
        self, fields: list[str], line: int, offset: int
    ) -> tuple[bytes | None, bytes | None, tuple[int, str] | None]: ...

class Batch:
    rows_read: int
    @staticmethod
    def from_messages(
        values: list[bytes],
        keys: list[bytes] | None,
        rows: list[int],
        lines: list[int],
        offsets: list[int],
        rows_read: int,
    ) -> Batch: ...
    def exact(self) -> list[tuple[int, int, int, int, int]]: ...
    def set_aside(
        self,
        line: int,
        row: int,
        offset: int,
        reason: str,
        raw: bytes,
        kafka_error: int | None = None,
        kind: str | None = None,
    ) -> None: ...
    def bad_summary(self) -> tuple[int, int, dict[str, int]]:
        """(count, line of the last, {kind: count})."""
    def bad_rows(self, limit: int | None = None) -> list[BadRowTuple]:
        """The first ``limit`` bad rows in file order (all: None)."""
    def fill(self, slot: int, value: bytes, key: bytes | None = None) -> None: ...
    def reject(self, slot: int) -> None: ...
    def withhold(self, offsets: set[int]) -> list[tuple[int, int, int]]: ...
    def withhold_keyless(self) -> list[tuple[int, int, int]]: ...
    def __len__(self) -> int: ...
    def message_values(self) -> list[bytes]: ...
    def message_keys(self) -> list[bytes | None]: ...
    def message_lines(self) -> list[int]: ...

BadRowTuple = tuple[int, int, int, str, bytes, int | None, str]
"""A bad row: (line, row, offset, reason, raw, Kafka error code, kind of reason)."""

Refusal = tuple[int, int, int, int, str]
"""A row Kafka refused: (row within its chunk, line, offset, Kafka error code, reason)."""

class Producer:
    def __init__(
        self, config: list[tuple[str, str]], topic: str, retry_budget_s: float
    ) -> None: ...
    def warm_up(self) -> int | None: ...
    def send(
        self,
        batch: Batch,
        dead_letter_topic: str | None = None,
        source: bytes = b"",
        room: int = 0,
    ) -> int: ...
    def poll(self, timeout_ms: int) -> list[tuple[int, list[Refusal]]]: ...
    def flush(self) -> list[tuple[int, list[Refusal]]]: ...
    def init_transactions(self, timeout_ms: int) -> None: ...
    def begin_transaction(self) -> None: ...
    def commit_transaction(self, timeout_ms: int) -> list[tuple[int, list[Refusal]]]: ...
    def abort_transaction(self, timeout_ms: int) -> None: ...
    def send_record(self, topic: str, partition: int, key: bytes, value: bytes) -> None: ...
    def take_txn_refusals(self) -> list[Refusal]: ...
    def fault_seconds(self) -> float: ...
    def take_logs(self) -> list[tuple[int, str]]: ...
    def request_stop(self) -> None: ...
    def close(self, abort: bool = False) -> None: ...
