"""Credentials out of every message that leaves the worker.

:func:`scrub` removes the credential values found in the environment (each cloud's conventional
variables) and the usual secret-bearing patterns (SAS signatures, account keys, private keys,
Authorization headers); :func:`install_log_scrubbing` puts it behind every log handler.
"""

from __future__ import annotations

import json
import logging
import os
import re

from ingest_worker.sources.base import Environ

# Variables whose values are credentials, in each cloud's conventional names. Their values are
# scrubbed from every message; the key id is not strictly secret but is no one's business either.
SECRET_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "GOOGLE_APPLICATION_CREDENTIALS_JSON",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_CLIENT_SECRET",
    "HTTP_PASSWORD",
    "HTTP_BEARER_TOKEN",
)


_SECRET_PATTERNS = (
    # Azure SAS signature and account key, S3/GCS presigned-URL signatures and session tokens.
    re.compile(r"(?i)(\bsig=)[^&\s'\";]+"),
    re.compile(r"(?i)(AccountKey=)[^;\s'\"]+"),
    re.compile(r"(?i)(SharedAccessSignature=)[^;\s'\"]+"),
    re.compile(r"(?i)(X-(?:Amz|Goog)-(?:Signature|Security-Token|Credential)=)[^&\s'\"]+"),
    # Authorization headers as they appear in reprs of requests and SDK logs.
    re.compile(r"(?i)(['\"]?Authorization['\"]?\s*[:=]\s*['\"]?)[^'\"\r\n,}]+"),
    re.compile(r"(?s)(-----BEGIN [A-Z ]*PRIVATE KEY-----).*?-----END [A-Z ]*PRIVATE KEY-----"),
)
_MIN_SECRET_LEN = 4  # shorter values would scrub ordinary words


def secret_values(environ: Environ) -> list[str]:
    """The credential strings found in ``environ``, longest first, in raw and JSON-escaped form."""
    values: set[str] = set()
    for key in SECRET_VARIABLES:
        value = environ.get(key, "")
        if len(value) < _MIN_SECRET_LEN:
            continue
        values.add(value)
        if key == "AZURE_STORAGE_CONNECTION_STRING":
            for part in value.split(";"):
                name, _, v = part.partition("=")
                if name.strip() in ("AccountKey", "SharedAccessSignature") and v:
                    values.add(v)
        if key == "GOOGLE_APPLICATION_CREDENTIALS_JSON":
            try:
                info = json.loads(value)
            except ValueError:
                continue
            if isinstance(info, dict):
                for field in ("private_key", "private_key_id", "client_secret", "refresh_token"):
                    if isinstance(info.get(field), str):
                        values.add(info[field])
    # A secret can reach a message JSON-escaped (a private key's newlines) or quoted.
    escaped = {json.dumps(v)[1:-1] for v in values}
    return sorted((v for v in values | escaped if len(v) >= _MIN_SECRET_LEN), key=len, reverse=True)


def scrub(text: str, environ: Environ | None = None) -> str:
    """``text`` without credential values or secret-bearing URL/header fragments."""
    for value in secret_values(os.environ if environ is None else environ):
        text = text.replace(value, "***")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + "***", text)
    return text


class ScrubbingFormatter(logging.Formatter):
    """Wraps a formatter and scrubs what it produces (message, extra fields and traceback)."""

    def __init__(self, inner: logging.Formatter | None = None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter("%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return scrub(self.inner.format(record))


def install_log_scrubbing(*logger_names: str) -> None:
    """Scrubs the output of every handler of the named loggers and of the root logger.

    Cloud SDKs log through their own loggers, which propagate to the root: the root gets a
    scrubbing stderr handler for warnings if it has none (instead of the unformatted
    ``logging.lastResort``). The Azure SDK's HTTP logging (headers, URLs) is kept at WARNING.
    """
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setLevel(logging.WARNING)
        root.addHandler(handler)
    for logger in [root, *(logging.getLogger(n) for n in logger_names)]:
        for h in logger.handlers:
            if not isinstance(h.formatter, ScrubbingFormatter):
                h.setFormatter(ScrubbingFormatter(h.formatter))
    for noisy in ("azure", "botocore", "urllib3", "google.auth"):
        lg = logging.getLogger(noisy)
        if lg.level == logging.NOTSET or lg.level < logging.WARNING:
            lg.setLevel(logging.WARNING)


