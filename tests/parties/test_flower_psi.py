"""PSI over a real Flower 1.41 deployment on loopback: SuperLink, SuperNode, relay, `flwr run`.

Brand: SuperLink + ServerApp (its installed PEC drives the rounds). Partner: SuperNode whose
ClientApp only relays bytes to the partner's own `pec psi serve` process, which holds the
partner's table and state. `parties.local_flower.LocalFlower` (what `pec vfl local` uses) starts
every process, bounds every wait and kills each process group at the end.
"""

import json
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("flwr")
pytestmark = pytest.mark.integration

from parties.local_flower import LocalFlower, free_port  # noqa: E402


def test_psi_both_sides_over_flower(tmp_path: Path) -> None:
    brand = pd.DataFrame({"id": range(8), "phone": [f"1380000{i:04d}" for i in range(8)]})
    partner = pd.DataFrame(
        {"mobile": [f"+86 1380000{i:04d}" for i in range(4, 14)], "tag": list("abcdefghij")}
    )
    brand.to_csv(tmp_path / "brand.csv", index=False)
    partner.to_csv(tmp_path / "partner.csv", index=False)
    relay_port = free_port()
    job = "job-flower-1"
    with LocalFlower(tmp_path / "run") as flower:
        flower.start(
            "relay",
            [sys.executable, "-m", "pec", "psi", "serve", str(tmp_path / "partner.csv"),
             "--job-id", job, "--key", "phone=mobile:phone", "--reveal", "both", "--align",
             "--out", str(tmp_path / "partner_out"), "--port", str(relay_port),
             "--timeout", "300"],
        )  # fmt: skip
        flower.start_superlink()
        flower.wait_http(f"http://127.0.0.1:{relay_port}/health", 60, "relay")
        flower.start_supernode(f"http://127.0.0.1:{relay_port}")
        flower.wait_superlink()
        run_id = flower.launch(
            {"job-id": job, "table": str(tmp_path / "brand.csv"), "keys": "phone=mobile:phone",
             "reveal": "both", "out": str(tmp_path / "brand_out"), "timeout": 240, "align": True}
        )  # fmt: skip
        deadline, status = time.monotonic() + 240, ""
        while time.monotonic() < deadline:
            status = flower.status(run_id)
            if status.startswith("finished"):
                break
            time.sleep(2)
        assert status == "finished:completed", (status, flower.run_log(run_id)[-3000:])
        left = pd.read_csv(tmp_path / "brand_out" / "left.csv", dtype=str)
        assert left["id"].tolist() == ["4", "5", "6", "7"]
        right = pd.read_csv(tmp_path / "partner_out" / "right.csv", dtype=str)
        assert right["tag"].tolist() == ["a", "b", "c", "d"]
        pairs = left.merge(right, on="pec_match_id")  # aligned by the shared pseudonymous id
        assert pairs["id"].tolist() == ["4", "5", "6", "7"]
        assert pairs["tag"].tolist() == ["a", "b", "c", "d"]
        brand_summary = json.loads((tmp_path / "brand_out" / "summary.json").read_text())
        assert brand_summary["intersection"] == 4
        # by default the second round trip goes over the direct stream offered with the first
        assert brand_summary["transport"] == "stream"
        assert len(brand_summary["round_trip_seconds"]) == 1
        assert brand_summary["stream_round_trips"] == 1
        relay = flower.processes["relay"]
        relay.wait(timeout=30)  # the relay exits once its job is complete
        assert relay.returncode == 0
