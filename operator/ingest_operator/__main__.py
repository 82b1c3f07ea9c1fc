"""``python -m ingest_operator``: validates the settings, waits for the operator's Lease (another
replica may hold it), then runs the kopf operator until SIGTERM or until the Lease is lost."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import signal
import sys
import threading

import kopf

from ingest_operator import leader, metrics
from ingest_operator.config import OperatorConfigError, load_config
from ingest_worker.logs import setup_logging


def main() -> int:
    try:
        config = load_config(os.environ)
        identity = leader.identity_from_env(os.environ) if config.leader_election else None
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
    # Served by a standby too: csvkafka_operator_leader says which replica leads.
    metrics.serve(config.metrics_port)
    # kopf's stop flag, also set by a SIGTERM that comes before kopf installs its own handler
    # (while standing by, or just after winning the Lease), and by the loss of the Lease.
    stop_flag = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop_flag.set())
    elector = None
    if identity is not None:
        elector = leader.LeaderElector(config, identity, stop_flag)
        with leader.standby_health(config.health_port, elector.healthy):
            leading = elector.campaign()
        if not leading:
            return elector.finish()
    else:
        metrics.lead()
    liveness = f"http://0.0.0.0:{config.health_port}/healthz" if config.health_port else None
    settings = kopf.OperatorSettings()  # ours, to find the handlers' executor afterwards

    async def operate() -> None:
        try:
            await kopf.operator(
                settings=settings,
                standalone=True,  # kopf's peering is off: the Lease decides who runs handlers
                clusterwide=config.clusterwide,
                namespaces=list(config.watch_namespaces),
                liveness_endpoint=liveness,
                stop_flag=stop_flag,
            )
        finally:
            # kopf waits for a threading.Event in a thread of the loop's executor, which
            # asyncio.run joins before it returns: whatever stopped kopf (its own SIGTERM
            # handler too), that thread must end.
            stop_flag.set()

    try:
        with contextlib.suppress(asyncio.CancelledError):  # as kopf.run does
            asyncio.run(operate())
    finally:
        # kopf returns even when a sync handler it could not cancel still runs in its thread:
        # the Lease is released only once none does, else the process ends with that thread.
        drained = _drained(settings.execution.executor, timeout=5.0)
        code = elector.finish(release=drained) if elector is not None else 0
        if not drained:
            logging.getLogger(__name__).warning("a handler was still running; exiting")
            _flush_logs()
            os._exit(code or 1)
    return code


def _drained(executor: concurrent.futures.Executor, timeout: float) -> bool:
    """Whether every thread of ``executor`` ended within ``timeout`` seconds."""
    waiter = threading.Thread(target=executor.shutdown, kwargs={"wait": True}, daemon=True)
    waiter.start()
    waiter.join(timeout)
    return not waiter.is_alive()


def _flush_logs() -> None:
    for handler in logging.getLogger().handlers:
        handler.flush()


if __name__ == "__main__":
    sys.exit(main())
