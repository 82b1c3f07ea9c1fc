"""A client of Toxiproxy's HTTP API (hack/testenv.sh runs it in the node's namespace, with the
proxies ``kafka``, to the broker's listener advertised at the proxy, and ``s3``, to moto).

A toxic is a fault on one direction of every connection through a proxy: ``downstream`` is what
the server sends to the client, ``upstream`` what the client sends. The ones used here:
``latency`` (``latency``, ``jitter`` ms), ``bandwidth`` (``rate`` KB/s), ``reset_peer`` (a TCP
RST after ``timeout`` ms) and ``timeout`` (nothing passes; with ``timeout`` 0 the connection
stays open and silent: a black hole).
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import count
from typing import Any

_names = count()


@dataclass
class Toxiproxy:
    url: str

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            text = resp.read()
        return json.loads(text) if text else None

    def add(self, proxy: str, kind: str, stream: str = "downstream", **attributes: int) -> str:
        """Puts a toxic on ``proxy`` and returns its name."""
        name = f"{kind}-{stream}-{next(_names)}"
        self._call("POST", f"/proxies/{proxy}/toxics", {
            "name": name, "type": kind, "stream": stream, "toxicity": 1.0,
            "attributes": attributes})
        return name

    def remove(self, proxy: str, name: str) -> None:
        self._call("DELETE", f"/proxies/{proxy}/toxics/{name}")

    def reset(self) -> None:
        """Every proxy enabled, every toxic removed."""
        self._call("POST", "/reset")

    @contextmanager
    def toxic(self, proxy: str, kind: str, stream: str = "downstream",
              **attributes: int) -> Iterator[str]:
        name = self.add(proxy, kind, stream, **attributes)
        try:
            yield name
        finally:
            self.remove(proxy, name)
