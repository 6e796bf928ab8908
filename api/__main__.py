"""``python -m api``: serve the node API with uvicorn (host and port from the arguments)."""

from __future__ import annotations

import argparse


def main() -> None:
    """Parse ``--host``/``--port`` and serve :func:`api.create_app`."""
    import uvicorn

    from api.app import create_app

    parser = argparse.ArgumentParser(prog="python -m api", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8700)
    args = parser.parse_args()
    uvicorn.run(create_app(), host=args.host, port=args.port, access_log=False)


if __name__ == "__main__":
    main()
