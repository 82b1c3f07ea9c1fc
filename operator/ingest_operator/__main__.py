"""``python -m ingest_operator``: validates the settings, then runs the kopf operator."""

from __future__ import annotations

import logging
import os
import sys

import kopf

from ingest_operator.config import OperatorConfigError, load_config
from ingest_worker.logs import setup_logging


def main() -> int:
    try:
        config = load_config(os.environ)
    except OperatorConfigError as exc:
        print(f"csvkafka-operator: {exc}", file=sys.stderr)
        return 2
    # JSON lines, as the worker's: one log pipeline parses both.
    setup_logging(config.log_level, logger="")
    if config.log_level != "DEBUG":
        # kopf logs every handler call ("Handler 'track_phase' succeeded.") at INFO, once per
        # worker checkpoint; transitions are logged by the handlers and posted as Events.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    from ingest_operator import handlers  # registers the handlers

    handlers.configure(config)
    liveness = f"http://0.0.0.0:{config.health_port}/healthz" if config.health_port else None
    kopf.run(
        standalone=True,  # one replica; no peering objects to install
        clusterwide=config.clusterwide,
        namespaces=list(config.watch_namespaces),
        liveness_endpoint=liveness,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
