"""The dead-letter record: one per bad row, whatever set it aside (the CSV, a conversion, Kafka).

The compiled core builds it (``core/src/deadletter.rs``) from the row's batch, as it produces the
batch (``RowProducer.send``), and its header names come from there; the verifier reads them
here:

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

from csvkafka_core import DEAD_LETTER_HEADERS

(REASON, SOURCE, LINE, ROW, OFFSET, KAFKA_ERROR, TRUNCATED,
 ORIGINAL_LENGTH) = DEAD_LETTER_HEADERS

# What the headers, the record's framing and the batch around it may take, at most (a long
# reason and URL included): the value gets the rest of the limit.
OVERHEAD_BYTES = 16 * 1024
DEFAULT_MAX_BYTES = 1_000_000
"""librdkafka's and Kafka's default message size limit (message.max.bytes, max.message.bytes)."""


def value_room(max_bytes: int) -> int:
    """The most of a row's bytes a dead letter carries, whose whole size stays within
    ``max_bytes``; a longer row is cut (``truncated``/``original-length`` say so)."""
    return max(0, max_bytes - OVERHEAD_BYTES)
