"""``python -m ingest_worker run ...`` (same as ``csv-ingest``)."""

import sys

if __name__ == "__main__":
    from ingest_worker.cli import main

    sys.exit(main())
