"""A Schema Registry client for the calls an ingestion makes once per run (Confluent's REST API).

Register or look up the file's schema, read a subject's latest version and its compatibility
level, read a schema by id (a resume, the verifier). Rows never wait on the registry: its answer
is the 5 bytes of framing every value starts with.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ingest_worker.csv.dialect import ConfigError

if TYPE_CHECKING:
    import requests

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
TIMEOUT_S = 10.0
# Connection failures and 5xx are retried this long: a registry restarting is not a bad spec.
RETRY_BUDGET_S = 60.0


class RegistryError(ConfigError):
    """The registry refused a call, or could not be reached: the ingestion fails with this."""


class SchemaRefused(RegistryError):
    """The subject's compatibility does not allow the schema."""


@dataclass(frozen=True)
class Registered:
    subject: str
    version: int
    id: int
    schema: dict[str, Any]
    schema_type: str


@dataclass(frozen=True)
class Auth:
    username: str | None = None
    password: str | None = None
    token: str | None = None

    @classmethod
    def from_secret(cls, keys: dict[str, str]) -> Auth:
        if "token" in keys:
            return cls(token=keys["token"])
        if "username" in keys and "password" in keys:
            return cls(username=keys["username"], password=keys["password"])
        raise ConfigError("the schema registry Secret needs username and password, or token "
                          f"(it has {', '.join(sorted(keys)) or 'no keys'})")


def frame(schema_id: int) -> bytes:
    """Confluent's wire format header: magic byte 0, then the schema id (4 bytes, big-endian)."""
    return b"\x00" + schema_id.to_bytes(4, "big")


def parse_frame(value: bytes) -> tuple[int, bytes]:
    """The schema id and the body of a framed value."""
    if len(value) < 5 or value[0] != 0:
        raise ValueError("not in Confluent's wire format (magic byte 0 and a schema id)")
    return int.from_bytes(value[1:5], "big"), value[5:]


class Registry:
    def __init__(self, url: str, auth: Auth | None = None) -> None:
        import requests  # only an ingestion with a registry pays its import

        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.headers.update({"Accept": CONTENT_TYPE, "Content-Type": CONTENT_TYPE})
        auth = auth or Auth()
        if auth.token:
            self.session.headers["Authorization"] = f"Bearer {auth.token}"
        elif auth.username is not None:
            self.session.auth = (auth.username, auth.password or "")

    def _call(self, method: str, path: str, body: Any = None,
              none_on: tuple[int, ...] = ()) -> Any:
        """The answer's JSON, None for a status in ``none_on`` (404: there is none), or
        RegistryError; connection failures and 5xx are retried for RETRY_BUDGET_S."""
        deadline = time.monotonic() + RETRY_BUDGET_S
        delay = 0.5
        while True:
            import requests

            try:
                resp = self.session.request(method, self.url + path, timeout=TIMEOUT_S,
                                            data=None if body is None else json.dumps(body))
            except requests.RequestException as e:
                if time.monotonic() + delay > deadline:
                    raise RegistryError(f"the schema registry at {self.url} cannot be reached: "
                                        f"{type(e).__name__}") from e
            else:
                if resp.status_code < 500 or time.monotonic() + delay > deadline:
                    break
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
        if resp.status_code in none_on:
            return None
        if resp.status_code in (401, 403):
            raise RegistryError(f"the schema registry at {self.url} refused the credentials "
                                f"(HTTP {resp.status_code}): check schemaRegistry.secretRef")
        if resp.status_code >= 300:
            raise RegistryError(f"the schema registry answered {method} {path} with HTTP "
                                f"{resp.status_code}: {_message(resp)}")
        return resp.json()

    def lookup(self, subject: str, schema: dict[str, Any], schema_type: str) -> Registered | None:
        """The subject's version of exactly this schema, if registered."""
        got = self._call("POST", f"/subjects/{quote(subject, safe='')}",
                         _body(schema, schema_type), none_on=(404,))
        if got is None:
            return None
        return Registered(subject, int(got["version"]), int(got["id"]), schema, schema_type)

    def compatibility(self, subject: str) -> str:
        got = self._call("GET", f"/config/{quote(subject, safe='')}?defaultToGlobal=true",
                         none_on=(404,))
        if got is None:
            got = self._call("GET", "/config")
        return str(got.get("compatibilityLevel") or got.get("compatibility") or "BACKWARD")

    def register(self, subject: str, schema: dict[str, Any], schema_type: str) -> Registered:
        """Registers the schema (or finds it); SchemaRefused names the subject, its
        compatibility level and the registry's reasons."""
        found = self.lookup(subject, schema, schema_type)
        if found is not None:
            return found
        body = _body(schema, schema_type)
        if self._call("POST", f"/subjects/{quote(subject, safe='')}/versions", body,
                      none_on=(409,)) is None:
            level = self.compatibility(subject)
            reasons = self._reasons(subject, schema, schema_type) or "no reasons given"
            raise SchemaRefused(
                f"the schema registry refused the schema for subject {subject} (compatibility "
                f"{level}): {reasons}")
        found = self.lookup(subject, schema, schema_type)
        if found is None:
            raise RegistryError(f"the schema registry registered a schema under {subject} but "
                                "does not find it")
        return found

    def _reasons(self, subject: str, schema: dict[str, Any], schema_type: str) -> str:
        got = self._call("POST", f"/compatibility/subjects/{quote(subject, safe='')}/versions/"
                         "latest?verbose=true", _body(schema, schema_type), none_on=(404,))
        messages = (got or {}).get("messages") or []
        return "; ".join(str(m) for m in messages)

    def latest(self, subject: str) -> Registered | None:
        got = self._call("GET", f"/subjects/{quote(subject, safe='')}/versions/latest",
                         none_on=(404,))
        if got is None:
            return None
        stype = got.get("schemaType") or "AVRO"
        return Registered(subject, int(got["version"]), int(got["id"]),
                          json.loads(got["schema"]), stype)

    def schema(self, schema_id: int) -> tuple[dict[str, Any], str]:
        """The schema with this id, and its type (AVRO, JSON)."""
        got = self._call("GET", f"/schemas/ids/{schema_id}")
        return json.loads(got["schema"]), got.get("schemaType") or "AVRO"


def _body(schema: dict[str, Any], schema_type: str) -> dict[str, Any]:
    body: dict[str, Any] = {"schema": json.dumps(schema, separators=(",", ":"))}
    if schema_type != "AVRO":
        body["schemaType"] = schema_type
    return body


def _message(resp: requests.Response) -> str:
    try:
        return str(resp.json().get("message") or resp.text)
    except ValueError:
        return resp.text.strip()[:500]
