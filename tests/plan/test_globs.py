"""The README's glob rules: `*`, `?` and classes never cross `/`; a URL ending in `/` is a
prefix."""

from __future__ import annotations

import pytest

from ingest_worker.plan.globs import is_pattern, is_prefix, listing_prefix, matches, selects


@pytest.mark.parametrize(("pattern", "name", "expected"), [
    ("s3://b/data/*.csv", "s3://b/data/a.csv", True),
    ("s3://b/data/*.csv", "s3://b/data/.csv", True),
    ("s3://b/data/*.csv", "s3://b/data/old/a.csv", False),  # fnmatch would say True
    ("s3://b/data/*/a.csv", "s3://b/data/x/a.csv", True),
    ("s3://b/data/*/a.csv", "s3://b/data/x/y/a.csv", False),
    ("s3://b/data/**.csv", "s3://b/data/x/a.csv", False),  # ** is two *: no crossing either
    ("s3://b/part-?.csv", "s3://b/part-1.csv", True),
    ("s3://b/part-?.csv", "s3://b/part-12.csv", False),
    ("s3://b/a?b", "s3://b/a/b", False),
    ("s3://b/part-[0-4].csv", "s3://b/part-3.csv", True),
    ("s3://b/part-[0-4].csv", "s3://b/part-5.csv", False),
    ("s3://b/part-[!0-4].csv", "s3://b/part-5.csv", True),
    ("s3://b/part-[!0-4].csv", "s3://b/part-3.csv", False),
    ("s3://b/a[!x]b", "s3://b/a/b", False),  # a negated class does not take "/"
    ("s3://b/a[/x]b", "s3://b/a/b", False),  # nor does a class that names it
    ("s3://b/[[]x].csv", "s3://b/[x].csv", True),  # [[] is a literal [
    ("s3://b/[]]x", "s3://b/]x", True),  # ] first in a class is a member
    ("s3://b/a[b", "s3://b/a[b", True),  # no closing ]: a literal [
    ("s3://b/a.c?v", "s3://b/aXcsv", False),  # "." is literal
    ("s3://b/(x)+^$.csv", "s3://b/(x)+^$.csv", True),  # regex characters are literal
    ("s3://b/[a^]", "s3://b/^", True),
    ("s3://b/x*", "s3://b/x\nz", True),  # keys may hold any character but /
    ("s3://b/*.csv", "s3://b/a.csv.gz", False),  # the whole name must match
])
def test_matches(pattern: str, name: str, expected: bool) -> None:
    assert matches(pattern, name) is expected


def test_bad_range_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="bad pattern"):
        matches("s3://b/[z-a]", "s3://b/q")


def test_kinds_of_url() -> None:
    assert is_prefix("s3://b/data/") and not is_pattern("s3://b/data/")
    assert is_pattern("s3://b/*.csv") and is_pattern("gs://b/a?.csv") and is_pattern("/d/[ab]")
    assert not is_prefix("s3://b/data") and not is_pattern("s3://b/data.csv")


@pytest.mark.parametrize(("pattern", "prefix"), [
    ("s3://b/logs/2024-*.csv", "s3://b/logs/2024-"),
    ("s3://b/logs/*/x.csv", "s3://b/logs/"),
    ("s3://b/a?c/[xy]*", "s3://b/a"),
    ("s3://b/data/", "s3://b/data/"),
    ("s3://b/data.csv", "s3://b/data.csv"),
])
def test_listing_prefix(pattern: str, prefix: str) -> None:
    assert listing_prefix(pattern) == prefix
    # Everything the pattern takes starts with the prefix the bucket is listed with.
    assert all(not selects(pattern, n) or n.startswith(prefix)
               for n in ("s3://b/logs/2024-1.csv", "s3://b/logs/q/x.csv", "s3://b/abc/x1",
                         "s3://b/data/a", "s3://b/data.csv"))


def test_prefix_takes_every_depth_but_not_folder_markers() -> None:
    url = "s3://b/data/"
    assert selects(url, "s3://b/data/a.csv")
    assert selects(url, "s3://b/data/2024/01/a.csv")
    assert not selects(url, "s3://b/data/2024/")  # a zero-byte folder marker
    assert not selects(url, "s3://b/database.csv")
    assert selects("s3://b/data.csv", "s3://b/data.csv")
    assert not selects("s3://b/data.csv", "s3://b/data.csv.gz")
