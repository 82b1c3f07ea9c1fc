"""The Kafka side of the worker: the topics an ingestion writes to, and what sends to them."""
