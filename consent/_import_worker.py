"""Entry point of the import's parser process: ``python -m consent._import_worker FILE``.

See :func:`consent.io.iter_draft_batches`. It reads the event file and writes parsed batches to
its standard output; it never opens the ledger.
"""

from __future__ import annotations

from consent.io import parse_worker_main

if __name__ == "__main__":
    parse_worker_main()
