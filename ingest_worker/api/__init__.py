"""The CsvIngestion API: the contract the operator, the worker and the CRD share.

``spec`` and ``status`` are the models (the CRD is generated from them by
``ingest_operator.crdgen``); ``client`` is the one way both planes reach the resource: one API
client loader and one status read-compare-write. The names below are the resource's identity.
Nothing here parses CSV: the verifier (:mod:`ingest_worker.verify`) stays independent of it.
"""

GROUP = "csvkafka.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "CsvIngestion"
# The recorded plan of a run with work units: same name as its CsvIngestion.
PLAN_KIND = "CsvIngestionPlan"
PLAN_PLURAL = "csvingestionplans"
PLURAL = "csvingestions"
SINGULAR = "csvingestion"
SHORT_NAMES = ("csvi",)
