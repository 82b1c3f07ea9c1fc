"""The CsvIngestion operator: a kopf controller that runs one worker Job per ingestion run.

Layout: ``config`` (settings from the environment), ``crdgen`` (the CRD, generated from
``ingest_worker.spec``), ``builders`` (pure functions that make every child object),
``phases`` (the pure phase machine), ``guard`` (which workers the operator agrees to run),
``handlers`` (thin kopf handlers doing the I/O), ``metrics`` (Prometheus).
"""

GROUP = "csvkafka.io"
VERSION = "v1alpha1"
KIND = "CsvIngestion"
PLURAL = "csvingestions"
SINGULAR = "csvingestion"
SHORT_NAMES = ("csvi",)
PREFIX = GROUP  # annotation, label and finalizer prefix, instead of kopf's defaults
