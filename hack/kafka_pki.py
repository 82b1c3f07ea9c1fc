"""The local broker's TLS material (throwaway): a CA, the broker's certificate for its SASL_SSL
and SSL listeners, a client certificate for mutual TLS, and the two a user gets wrong: a client
certificate that has expired, and a CA the broker does not know.

    python hack/kafka_pki.py DIR BROKER_IP

Written once: an existing DIR/ca.crt is kept, so a broker restart keeps its certificates.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Key = ec.EllipticCurvePrivateKey


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str, key: Key, issuer: tuple[x509.Name, Key] | None, *, ca: bool = False,
    usage: x509.ObjectIdentifier | None = None, ip: str | None = None,
    valid: tuple[dt.datetime, dt.datetime] | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    start, end = valid or (now - dt.timedelta(hours=1), now + dt.timedelta(days=3650))
    issuer_name, issuer_key = issuer or (_name(subject), key)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer_name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(start).not_valid_after(end)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if usage is not None:
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if ip is not None:
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                            critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _pem(*items: x509.Certificate | Key) -> bytes:
    out = b""
    for it in items:
        if isinstance(it, x509.Certificate):
            out += it.public_bytes(serialization.Encoding.PEM)
        else:  # PKCS#8, unencrypted: what Kafka's PEM keystore and librdkafka both read
            out += it.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    return out


def main(d: Path, broker_ip: str) -> None:
    if (d / "ca.crt").exists():
        return
    d.mkdir(parents=True, exist_ok=True)
    key = lambda: ec.generate_private_key(ec.SECP256R1())  # noqa: E731
    ca_key, rogue_key = key(), key()
    ca = _cert("csvkafka-testenv-kafka-ca", ca_key, None, ca=True)
    rogue = _cert("csvkafka-unknown-ca", rogue_key, None, ca=True)
    issuer = (ca.subject, ca_key)
    broker_key, client_key, expired_key = key(), key(), key()
    broker = _cert("kafka", broker_key, issuer, usage=ExtendedKeyUsageOID.SERVER_AUTH, ip=broker_ip)
    client = _cert("ingest-mtls", client_key, issuer, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    expired = _cert("ingest-mtls", expired_key, issuer, usage=ExtendedKeyUsageOID.CLIENT_AUTH,
                    valid=(long_ago, long_ago + dt.timedelta(days=1)))
    files = {
        "broker.pem": _pem(broker_key, broker, ca),
        "client.crt": _pem(client), "client.key": _pem(client_key),
        "expired.crt": _pem(expired), "expired.key": _pem(expired_key),
        "unknown-ca.crt": _pem(rogue),
        "ca.crt": _pem(ca),  # last: its presence says the rest is written
    }
    for name, data in files.items():
        (d / name).write_bytes(data)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
