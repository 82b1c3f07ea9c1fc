"""``python -m ingest_worker run ...`` (same as ``csv-ingest``)."""

import sys

if __name__ == "__main__":
    # Imported here, not at the top: worker processes re-import this module (as __mp_main__).
    from ingest_worker.cli import main

    sys.exit(main())
