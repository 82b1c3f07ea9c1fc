"""Which objects a source URL names: one file, a prefix, or a glob.

The rules (the README's, issue 12):

- a URL that ends in ``/`` is a prefix: every object whose name starts with it, at any depth,
  except the zero-byte "folder" markers whose names end in ``/``;
- a URL with ``*``, ``?`` or ``[`` is a pattern, matched against the whole name:
  ``*`` is any run of characters and ``?`` any one character, neither of them ``/``;
  ``[abc]``, ``[a-z]`` and ``[!abc]`` are classes of one character, never ``/`` either;
  ``**`` is two ``*`` (it does not cross ``/`` either); a ``[`` without its ``]`` is itself,
  and ``[[]`` is a literal ``[`` (as in fnmatch);
- any other URL is one file.

Not :mod:`fnmatch`: its ``*`` crosses ``/``, so ``data/*.csv`` would also take
``data/old/x.csv``, which is not what a shell or ``gsutil ls`` would list.
"""

from __future__ import annotations

import functools
import re

WILDCARDS = "*?["


def is_prefix(url: str) -> bool:
    """Whether ``url`` names every object under it (it ends in ``/``)."""
    return url.endswith("/")


def is_pattern(url: str) -> bool:
    """Whether ``url`` holds a wildcard (``*``, ``?`` or ``[``)."""
    return any(c in url for c in WILDCARDS)


def listing_prefix(pattern: str) -> str:
    """The literal part before the first wildcard: the prefix to list the bucket with.

    For a prefix URL or a plain one it is the whole URL. The listing is then filtered with
    :func:`matches`; listing from the literal part (not the last ``/`` before it) lets the
    store skip more (``logs/2024-*`` lists ``logs/2024-``, not all of ``logs/``).
    """
    cut = min((i for i in (pattern.find(c) for c in WILDCARDS) if i >= 0), default=len(pattern))
    return pattern[:cut]


def matches(pattern: str, name: str) -> bool:
    """Whether ``name`` (a URL or key, as ``pattern`` is) matches the whole of ``pattern``."""
    return _compile(pattern).fullmatch(name) is not None


def selects(url: str, name: str) -> bool:
    """Whether the source URL ``url`` takes the object ``name`` (a URL of the same form)."""
    if is_prefix(url):
        # A name ending in "/" is a folder marker some consoles create: not a file.
        return name.startswith(url) and not name.endswith("/")
    if is_pattern(url):
        return matches(url, name)
    return name == url


def names_many(url: str) -> bool:
    """Whether a source URL names many files: a prefix or a glob. An http(s) URL names one
    file (its ``?`` starts a query, and a server lists nothing)."""
    if url.startswith(("http://", "https://")):
        return False
    return is_prefix(url) or is_pattern(url)


@functools.lru_cache(maxsize=64)
def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(translate(pattern), re.DOTALL)
    except re.error as e:  # a class such as [z-a]
        raise ValueError(f"bad pattern {pattern!r}: {e}") from None


def translate(pattern: str) -> str:
    """The regular expression of ``pattern`` (to be used with ``fullmatch``)."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":  # a "]" first is a member, as in fnmatch
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                out.append(re.escape(c))  # no closing "]": a literal "["
                continue
            body = pattern[i:j]
            i = j + 1
            negate = body.startswith("!")
            if negate:
                body = body[1:]
            # Escape what a regex class would read differently; keep "-" ranges.
            body = body.replace("\\", "\\\\").replace("^", "\\^").replace("[", "\\[")
            body = body.replace("]", "\\]")
            # A class never matches "/", so no wildcard crosses a folder.
            out.append(f"[^/{body}]" if negate else f"(?!/)[{body}]")
        else:
            out.append(re.escape(c))
    return "".join(out)
