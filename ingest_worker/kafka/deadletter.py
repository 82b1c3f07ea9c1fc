"""The dead-letter record: one per bad row, whatever set it aside (the CSV, a conversion, Kafka).

One definition, for every producer of dead letters and for the verifier:

* **value**: the row's bytes as in the file, without the line terminator; cut to fit when the
  row is larger than the dead-letter topic takes (``truncated``/``original-length`` say so);
* **key**: none;
* **headers** (UTF-8 text):

  ==================  ===========================================================
  ``reason``          why the row was set aside
  ``source``          the file's URL
  ``line``            physical line where the row starts (1-based)
  ``row``             data row number (1-based; header and blank lines excluded)
  ``offset``          byte offset of the row in the (uncompressed) file: with the
                      source, the row's identity (the verifier matches on it)
  ``kafka-error``     Kafka's error code, when Kafka refused the row's message
  ``truncated``       ``true`` when the value was cut
  ``original-length`` the row's length in bytes, when the value was cut
  ==================  ===========================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the verifier reads dead letters without the worker's parsing
    from ingest_worker.csv.encode import BadRow

REASON, SOURCE, LINE, ROW, OFFSET = "reason", "source", "line", "row", "offset"
KAFKA_ERROR, TRUNCATED, ORIGINAL_LENGTH = "kafka-error", "truncated", "original-length"

# What the headers, the record's framing and the batch around it may take, at most (a long
# reason and URL included): the value gets the rest of the limit.
OVERHEAD_BYTES = 16 * 1024
DEFAULT_MAX_BYTES = 1_000_000
"""librdkafka's and Kafka's default message size limit (message.max.bytes, max.message.bytes)."""


@dataclass(frozen=True)
class DeadLetter:
    value: bytes
    headers: list[tuple[str, bytes]]


def dead_letter(bad: BadRow, source_url: str, max_bytes: int = DEFAULT_MAX_BYTES) -> DeadLetter:
    """The dead-letter record of ``bad``, whose whole size stays within ``max_bytes``."""
    headers = [
        (REASON, bad.reason.encode()[:4096]),
        (SOURCE, source_url.encode()[:4096]),
        (LINE, str(bad.line).encode()),
        (ROW, str(bad.row).encode()),
        (OFFSET, str(bad.offset).encode()),
    ]
    if bad.kafka_error is not None:
        headers.append((KAFKA_ERROR, str(bad.kafka_error).encode()))
    room = max(0, max_bytes - OVERHEAD_BYTES)
    value = bad.raw
    if len(value) > room:
        headers += [(TRUNCATED, b"true"), (ORIGINAL_LENGTH, str(len(value)).encode())]
        value = value[:room]
    return DeadLetter(value, headers)
