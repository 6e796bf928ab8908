"""The brand's ServerApp: runs the brand's side of a PEC job with its installed PEC."""

from __future__ import annotations

import json

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Drive the job named in the run config; the brand's outputs land in its ``out`` folder."""
    config = dict(context.run_config)
    if config.get("kind", "psi") == "lookalike":
        from parties.flower_lookalike import run_brand_lookalike_job

        summary = run_brand_lookalike_job(grid, config)
        print(json.dumps({"job": config["job-id"], "audience": summary["audience"]["size"]}))
        return
    if config.get("kind", "psi") == "aggregate":
        from parties.aggregate_job import run_brand_aggregate

        summary = run_brand_aggregate(grid, config)
        print(json.dumps({"job": summary["job_id"], "groups": len(summary["cells"])}))
        return
    if config.get("kind", "psi") == "vfl":
        from parties.flower_vfl import run_brand_vfl  # the brand's installed, pinned PEC

        metrics = run_brand_vfl(grid, config)
        print(json.dumps({"job": config["job-id"], "auc": metrics["auc"]}))
        return
    from parties.flower_psi import run_brand_psi

    summary = run_brand_psi(grid, config)
    print(json.dumps({"job": summary["job_id"], "intersection": summary["intersection"]}))
