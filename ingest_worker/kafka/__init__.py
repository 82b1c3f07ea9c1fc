"""The Kafka side of the worker: the topics an ingestion writes to, and what sends to them."""


class TopicError(Exception):
    """A topic the ingestion needs is missing (and not to be created), may not be looked up or
    created by the worker's principal, the brokers refused the worker's login (or its client
    certificate), or did not answer in time.

    Here, not in ``topics``: the run catches it without importing the admin client, which the
    topic check imports in its own thread, beside the run's start (30 ms of it).
    """
