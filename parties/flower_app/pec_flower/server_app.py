"""The brand's ServerApp: runs the brand's side of a PEC job with its installed PEC."""

from __future__ import annotations

import json

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Drive the job named in the run config; the brand's outputs land in its ``out`` folder."""
    from parties.flower_psi import run_brand_psi  # the brand's installed, pinned PEC

    summary = run_brand_psi(grid, dict(context.run_config))
    print(json.dumps({"job": summary["job_id"], "intersection": summary["intersection"]}))
