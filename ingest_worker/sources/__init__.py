"""The CSV file's source: one registry of URL schemes, one module per scheme, streaming only.

The rest of the worker only sees :class:`CsvSource`: open the decompressed byte stream at an
offset, the total size when known, and the object's version. Byte offsets are always offsets
in the decompressed stream, so checkpoints mean the same thing for plain and compressed files.

Layout:

``registry``
    ``SCHEMES``, URL scheme -> :class:`~ingest_worker.sources.base.Scheme`; :func:`probe` and
    :func:`describe`. A URL of any other scheme is a :class:`SourceError`, never a guess.
``local``, ``s3``, ``gcs``, ``azure``, ``http``
    One module per scheme, each a ``SCHEME`` with the same small contract (``base.Scheme``):
    ``params`` (credentials from the environment, in each cloud's conventional variables; the
    SDK's default chain, e.g. workload identity, when there are none), ``stat`` (size and
    version from the object's metadata: mtime, S3 version id or ETag, GCS generation, Azure
    ETag, HTTP ETag), ``pin`` (reads pinned to that version where the store allows) and
    ``explain`` (what the SDK's errors mean).
``scrub``
    Every message that leaves the worker goes through :func:`scrub`, which removes the
    credential values found in the environment and the usual secret-bearing patterns.
``csv_source``
    :class:`CsvSource` over the registry.
"""

from __future__ import annotations

from ingest_worker.sources.base import ObjectStat, Scheme, SourceError
from ingest_worker.sources.csv_source import CsvSource, detect_compression
from ingest_worker.sources.registry import SCHEMES, describe, probe, scheme_for, scheme_of
from ingest_worker.sources.scrub import ScrubbingFormatter, install_log_scrubbing, scrub

__all__ = [
    "SCHEMES",
    "CsvSource",
    "ObjectStat",
    "Scheme",
    "ScrubbingFormatter",
    "SourceError",
    "describe",
    "detect_compression",
    "install_log_scrubbing",
    "probe",
    "scheme_for",
    "scheme_of",
    "scrub",
]
