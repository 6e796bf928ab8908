"""The brand's ServerApp code and the partner's relay ClientApp, without a Flower deployment.

An in-process Grid hands each pushed message straight to the ClientApp's query function (as a
SuperNode would, minus the polling and the process per message); the ClientApp relays the bytes
to the partner's relay server on loopback, exactly as in deployment. This is the fast twin of
`tests/federated/test_vfl_cli.py` (the real deployment).
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import sys
import threading
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("flwr")

from flwr.app import Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from federated.partner import PartnerConfig
from parties.aggregate_job import AggregateRelayJob, run_brand_aggregate
from parties.flower_psi import run_brand_psi
from parties.flower_vfl import job_options, run_brand_vfl
from parties.psi_job import PsiJobSide
from parties.relay_server import PsiRelayJob, RelayServer
from parties.vfl_job import VflRelayJob
from pec.psi_local import parse_key_spec
from pec.vfl_tables import load_party_table
from psi.wire import Reveal, Role
from tests.federated.conftest import dataset

pytestmark = pytest.mark.integration

APP = Path(__file__).resolve().parents[2] / "parties" / "flower_app" / "pec_flower"


def client_app_relay():  # the ClientApp module as the SuperNode would load it from the bundle
    spec = importlib.util.spec_from_file_location("pec_flower_client_app", APP / "client_app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.relay


class InProcessGrid:
    """push/pull of the Grid API, delivered synchronously to one partner's ClientApp."""

    node_id = 42

    def __init__(self, partner_url: str) -> None:
        self.relay = client_app_relay()
        self.context = Context(
            run_id=1, node_id=self.node_id, node_config={"partner-url": partner_url},
            state=RecordDict(), run_config={},
        )  # fmt: skip
        self.replies: dict[str, Message] = {}
        self.ids = itertools.count(1)
        self.pushed: list[Message] = []

    def get_node_ids(self) -> list[int]:
        return [self.node_id]

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for message in messages:
            message_id = f"m{next(self.ids)}"
            assert message.metadata.dst_node_id == self.node_id
            self.pushed.append(message)
            self.replies[message_id] = self.relay(message, self.context)
            ids.append(message_id)
        return ids

    def pull_messages(self, ids: Iterable[str]) -> list[Message]:
        return [self.replies.pop(i) for i in ids if i in self.replies]


@pytest.fixture(autouse=True)
def task_identity():
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = None


@pytest.mark.parametrize("transport", ["flower", "stream"])
def test_vfl_job_through_server_app_code_and_relay_client_app(
    tmp_path: Path, transport: str
) -> None:
    guest = pd.read_csv(dataset("breast_hetero_guest.csv")).sample(frac=1.0, random_state=3)
    host = pd.read_csv(dataset("breast_hetero_host.csv")).iloc[:520]
    guest.to_csv(tmp_path / "brand.csv", index=False)
    host.to_csv(tmp_path / "partner.csv", index=False)
    config = {
        "kind": "vfl", "job-id": "job-grid", "table": str(tmp_path / "brand.csv"),
        "id-column": "id", "labels": "y", "features": "", "test-table": "",
        "out": str(tmp_path / "brand_out"), "key-bits": 512, "epochs": 3, "timeout": 120,
        "progress-file": str(tmp_path / "progress.jsonl"), "transport": transport,
    }  # fmt: skip
    options = job_options(config)
    job = VflRelayJob(
        "job-grid",
        load_party_table(tmp_path / "partner.csv", "id", role="partner"),
        tmp_path / "partner_out",
        config=PartnerConfig(optimizer=options.training.optimizer, min_key_bits=512),
    )
    server = RelayServer(job, "127.0.0.1", 0)
    serving = threading.Thread(target=server.serve, args=(120,), daemon=True)
    serving.start()
    grid = InProcessGrid(server.address)

    metrics = run_brand_vfl(grid, config)  # type: ignore[arg-type]

    serving.join(timeout=30)
    assert server.outcome == "completed"
    assert metrics["auc"] > 0.95 and metrics["aligned_rows"] == 520
    if transport == "flower":
        assert metrics["round_trips"] == len(grid.pushed)
    else:  # one Flower message offers the stream; the job's requests all went over it
        assert len(grid.pushed) == 1 and metrics["round_trips"] > 10
    assert all(m.metadata.message_type == "query.pec" for m in grid.pushed)
    assert (
        json.loads((tmp_path / "brand_out" / "metrics.json").read_text())["auc"] == metrics["auc"]
    )
    assert (tmp_path / "partner_out" / "partner_model.json").exists()
    stages = [json.loads(line)["stage"] for line in (tmp_path / "progress.jsonl").open()]
    assert stages[0] == "align" and stages[-1] == "score"


def test_partner_errors_reach_the_brand_as_short_reasons_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    guest = pd.read_csv(dataset("breast_hetero_guest.csv"))
    guest.to_csv(tmp_path / "brand.csv", index=False)
    pd.read_csv(dataset("breast_hetero_host.csv")).to_csv(tmp_path / "partner.csv", index=False)
    job = VflRelayJob(
        "job-approved",  # the partner approved another job than the one the brand runs
        load_party_table(tmp_path / "partner.csv", "id", role="partner"),
        tmp_path / "partner_out",
    )
    server = RelayServer(job, "127.0.0.1", 0)
    threading.Thread(target=server.serve, args=(60,), daemon=True).start()
    grid = InProcessGrid(server.address)
    config = {
        "kind": "vfl", "job-id": "job-unapproved", "table": str(tmp_path / "brand.csv"),
        "id-column": "id", "labels": "y", "out": str(tmp_path / "brand_out"), "key-bits": 512,
        "timeout": 60, "progress-file": str(tmp_path / "progress.jsonl"), "transport": "flower",
    }  # fmt: skip
    with pytest.raises(Exception, match="job not approved by this partner"):
        run_brand_vfl(grid, config)  # type: ignore[arg-type]
    assert not (tmp_path / "brand_out").exists() and not (tmp_path / "partner_out").exists()
    last = json.loads((tmp_path / "progress.jsonl").read_text().splitlines()[-1])
    assert last["stage"] == "error" and "not approved" in last["message"]
    assert str(sys.maxsize) not in last["message"]


def _psi_tables(tmp_path: Path) -> tuple[Path, Path]:
    brand = pd.DataFrame({"id": [f"p{i}" for i in range(0, 60)], "x": range(60)})
    partner = pd.DataFrame({"pid": [f"p{i}" for i in range(40, 100)], "tag": ["t"] * 60})
    brand.to_csv(tmp_path / "brand.csv", index=False)
    partner.to_csv(tmp_path / "partner.csv", index=False)
    return tmp_path / "brand.csv", tmp_path / "partner.csv"


def _psi_relay(tmp_path: Path, partner: Path, min_overlap: int = 0) -> RelayServer:
    side = PsiJobSide(job_id="psi-grid", role=Role.RIGHT, table=partner, keys="id=pid:raw",
                      reveal=Reveal.BOTH, out=tmp_path / "partner_out")  # fmt: skip
    return RelayServer(PsiRelayJob(side, min_overlap=min_overlap, timeout=60), "127.0.0.1", 0)


def _psi_config(tmp_path: Path, brand: Path, transport: str) -> dict[str, object]:
    return {"job-id": "psi-grid", "table": str(brand), "keys": "id=pid:raw", "reveal": "both",
            "out": str(tmp_path / "brand_out"), "timeout": 60, "transport": transport}  # fmt: skip


@pytest.mark.parametrize("transport", ["flower", "stream"])
def test_psi_job_through_server_app_code_and_relay_client_app(
    tmp_path: Path, transport: str
) -> None:
    brand, partner = _psi_tables(tmp_path)
    server = _psi_relay(tmp_path, partner)
    serving = threading.Thread(target=server.serve, args=(60,), daemon=True)
    serving.start()
    grid = InProcessGrid(server.address)

    summary = run_brand_psi(grid, _psi_config(tmp_path, brand, transport))  # type: ignore[arg-type]

    serving.join(timeout=30)
    assert server.outcome == "completed"
    assert summary["intersection"] == 20 and summary["transport"] == transport
    matched = pd.read_csv(tmp_path / "brand_out" / "left.csv")
    assert sorted(matched["id"]) == sorted(f"p{i}" for i in range(40, 60))
    assert len(pd.read_csv(tmp_path / "partner_out" / "right.csv")) == 20
    if transport == "flower":
        assert len(grid.pushed) == 2 and "stream_round_trips" not in summary
    else:  # the offer rode on the first batch; the second round trip went over the stream
        assert len(grid.pushed) == 1 and summary["stream_round_trips"] == 1


def test_a_psi_overlap_below_the_partners_minimum_is_withheld_on_the_stream(
    tmp_path: Path,
) -> None:
    brand, partner = _psi_tables(tmp_path)
    server = _psi_relay(tmp_path, partner, min_overlap=21)  # the overlap is 20
    serving = threading.Thread(target=server.serve, args=(60,), daemon=True)
    serving.start()
    grid = InProcessGrid(server.address)
    with pytest.raises(Exception, match="stream"):
        run_brand_psi(grid, _psi_config(tmp_path, brand, "stream"))  # type: ignore[arg-type]
    serving.join(timeout=30)
    assert server.outcome == "failed: OverlapBelowMinimum"
    assert len(grid.pushed) == 1  # the refusal came on the stream: the last reply never left
    assert not (tmp_path / "brand_out").exists() and not (tmp_path / "partner_out").exists()


@pytest.mark.parametrize("transport", ["flower", "stream"])
def test_aggregate_job_through_server_app_code_and_relay_client_app(
    tmp_path: Path, transport: str
) -> None:
    brand = pd.DataFrame({"id": [f"p{i}" for i in range(0, 120)]})
    partner = pd.DataFrame({"pid": [f"p{i}" for i in range(20, 200)],
                            "tier": ["a", "b", "c"] * 60})  # fmt: skip
    brand.to_csv(tmp_path / "brand.csv", index=False)
    partner.to_csv(tmp_path / "partner.csv", index=False)
    job = AggregateRelayJob("agg-grid", tmp_path / "partner.csv", parse_key_spec("id=pid:raw"),
                            "tier", tmp_path / "partner_out", min_cell=10)  # fmt: skip
    server = RelayServer(job, "127.0.0.1", 0)
    serving = threading.Thread(target=server.serve, args=(120,), daemon=True)
    serving.start()
    grid = InProcessGrid(server.address)
    config = {"job-id": "agg-grid", "table": str(tmp_path / "brand.csv"), "keys": "id=pid:raw",
              "out": str(tmp_path / "brand_out"), "timeout": 120,
              "transport": transport}  # fmt: skip

    summary = run_brand_aggregate(grid, config)

    serving.join(timeout=30)
    assert server.outcome == "completed"
    # p20..p119 are shared: 100 people, tiers a, b, c in turn from p20
    assert summary["intersection"] == 100
    assert summary["cells"] == {"a": 34, "b": 33, "c": 33}
    assert summary["transport"] == transport
    if transport == "flower":
        assert len(grid.pushed) == len(summary["round_trip_seconds"]) > 1
    else:  # one Flower message offered the stream; every later round trip went over it
        assert len(grid.pushed) == 1 and summary["stream_round_trips"] >= 1
