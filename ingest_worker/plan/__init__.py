"""The plan of a run that covers many files, or huge files in byte ranges (issue 12): pure.

A plan is taken once, when the run starts, and recorded, so every retry and every index of
the Indexed Job agrees on it: the file list with each file's size and version
(:mod:`~ingest_worker.plan.globs` selects the files), the record-aligned byte ranges of huge
files (:mod:`~ingest_worker.plan.shards`), the work units they make
(:mod:`~ingest_worker.plan.units`), and which index owns which units
(:mod:`~ingest_worker.plan.assign`). Nothing here lists a bucket or talks to Kubernetes: the
caller hands in the listing and a ranged reader.
"""
