"""The client certificate a worker presents, checked before it connects.

A broker refuses an expired (or not yet valid) client certificate with TLS alert 46,
"certificate unknown", which names neither the certificate nor the reason; checked here, the
failure says which certificate and since when.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path

from cryptography import x509

from ingest_worker.kafka import TopicError


def check_client_certificate(config: Mapping[str, str], now: dt.datetime | None = None) -> None:
    """Raises :class:`TopicError` when the configured client certificate (``ssl.certificate.pem``
    or ``ssl.certificate.location``) cannot be read, or is outside its validity period."""
    where = "ssl.certificate.pem"
    pem = config.get(where)
    location = config.get("ssl.certificate.location")
    if pem is None and location:
        where = f"ssl.certificate.location {location}"
        try:
            pem = Path(location).read_text()
        except OSError as e:
            raise TopicError(f"cannot read the client certificate ({where}): {e.strerror}") from e
    if not pem:
        return
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
    except ValueError as e:
        raise TopicError(f"the client certificate ({where}) is not a PEM certificate: {e}") from e
    now = now or dt.datetime.now(dt.UTC)
    name = f"{where}, {cert.subject.rfc4514_string()}"
    if now > cert.not_valid_after_utc:
        raise TopicError(f"the client certificate ({name}) expired on "
                         f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC: renew it")
    if now < cert.not_valid_before_utc:
        raise TopicError(f"the client certificate ({name}) is not valid before "
                         f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC")
