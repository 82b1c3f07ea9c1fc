"""The CsvIngestion operator: a kopf controller that runs one worker Job per ingestion run.

Layout: ``config`` (settings from the environment), ``crdgen`` (the CRD, generated from
``ingest_worker.api``), ``builders`` (pure functions that make every child object),
``phases`` (the pure phase machine), ``guard`` (which workers the operator agrees to run),
``handlers`` (thin kopf handlers doing the I/O), ``metrics`` (Prometheus).
"""

from ingest_worker.api import GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION

__all__ = ["GROUP", "KIND", "PLURAL", "PREFIX", "SHORT_NAMES", "SINGULAR", "VERSION"]

PREFIX = GROUP  # annotation, label and finalizer prefix, instead of kopf's defaults
