"""The Kafka client certificate's validity, checked before the worker connects (pure)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ingest_worker.kafka import TopicError
from ingest_worker.kafka.tls import check_client_certificate

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)


def _pem(start: dt.datetime, end: dt.datetime) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ingest")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(start).not_valid_after(end).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_a_valid_certificate_and_none_at_all_pass() -> None:
    check_client_certificate({"ssl.certificate.pem": _pem(NOW - dt.timedelta(days=1),
                                                          NOW + dt.timedelta(days=1))}, NOW)
    check_client_certificate({"security.protocol": "SASL_SSL"}, NOW)


def test_an_expired_certificate_names_itself_and_the_date() -> None:
    pem = _pem(NOW - dt.timedelta(days=10), NOW - dt.timedelta(days=2))
    with pytest.raises(TopicError, match=r"the client certificate \(ssl.certificate.pem, "
                                         r"CN=ingest\) expired on 2026-11-28 12:00:00 UTC"):
        check_client_certificate({"ssl.certificate.pem": pem}, NOW)


def test_a_certificate_not_yet_valid_from_a_file(tmp_path: Path) -> None:
    f = tmp_path / "client.crt"
    f.write_text(_pem(NOW + dt.timedelta(days=1), NOW + dt.timedelta(days=2)))
    with pytest.raises(TopicError, match=rf"ssl.certificate.location {f}, CN=ingest\) is not "
                                         "valid before 2026-12-01"):
        check_client_certificate({"ssl.certificate.location": str(f)}, NOW)


def test_unreadable_or_not_pem() -> None:
    with pytest.raises(TopicError, match="cannot read the client certificate"):
        check_client_certificate({"ssl.certificate.location": "/nonexistent/client.crt"}, NOW)
    with pytest.raises(TopicError, match="is not a PEM certificate"):
        check_client_certificate({"ssl.certificate.pem": "hello"}, NOW)
