"""Test servers that live in the node's network namespace, as every server here must.

A socket belongs to the network namespace its creating thread was in, and ``setns`` moves only
the calling thread: a short-lived thread enters the node's namespace, creates (and binds) the
server there, and ends. The server then serves from any thread of the test process, at an
address that pods and the host both reach.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def node_netns() -> str:
    return os.environ.get("CSVKAFKA_NODE_NETNS", "csvkafka-node")


def node_ip() -> str:
    return os.environ.get("CSVKAFKA_NODE_IP", "10.201.0.2")


def in_node_netns(make: Callable[[], T]) -> T:
    """Calls ``make`` in a thread inside the node's network namespace and returns its result."""
    box: dict[str, T | BaseException] = {}

    def run() -> None:
        try:
            fd = os.open(f"/run/netns/{node_netns()}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into {node_netns()}: {os.strerror(err)}")
            finally:
                os.close(fd)
            box["value"] = make()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, name="node-netns")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]
