"""``pec node``: create and inspect a node home (identity, peers, datasets)."""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console

from parties.config import Dataset, NodeConfig, NodeRole, Peer, init_node
from parties.errors import PartyError
from parties.identity import NodeIdentity, public_key_from_text
from pec.errors import PecError
from pec.psi_cli import fail
from pec.tables import inspect_table

app = typer.Typer(help="A node's home: identity, peers and datasets.", no_args_is_help=True)


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


Home = Annotated[Path, typer.Option(envvar="PEC_HOME", help="The node home (PEC_HOME).")]


@app.command("init")
def init(
    home: Home,
    name: Annotated[str, typer.Option(help="The node's name.")],
    role: Annotated[NodeRole, typer.Option(help="brand (coordinates) or partner (answers).")],
    api_port: Annotated[int, typer.Option(help="Port of the node's control plane.")] = 8700,
) -> None:
    """Create a node home: an Ed25519 identity key and node.toml."""
    try:
        init_node(home, name, role, api_port=api_port)
        identity = NodeIdentity.load(home)
    except (PartyError, ValueError) as exc:
        raise fail(str(exc), 2) from None
    typer.echo(f"node {name} ({role.value}) created in {home}")
    typer.echo(f"fingerprint: {identity.fingerprint}")
    typer.echo(f"public key (give it to your peers): {identity.public_text}")


@app.command("show")
def show(home: Home) -> None:
    """Print the node's identity, peers and datasets (never the private key)."""
    try:
        config = NodeConfig.load(home)
        identity = NodeIdentity.load(home)
    except PartyError as exc:
        raise fail(str(exc), 2) from None
    console = Console()
    console.print(f"[bold]{config.node.name}[/] ({config.node.role.value}) at {home}")
    console.print(f"fingerprint {identity.fingerprint}; public key {identity.public_text}")
    console.print(f"api {config.api.host}:{config.api.port}; superlink {config.flower.superlink}")
    for peer in config.peers:
        console.print(
            f"peer {peer.name} ({peer.role.value}) {peer.fingerprint[:16]} {peer.address}"
        )
    for name, dataset in sorted(config.datasets.items()):
        console.print(f"dataset {name}: {dataset.path} ({dataset.format})")


@app.command("add-peer")
def add_peer(
    home: Home,
    name: Annotated[str, typer.Option(help="The peer's name.")],
    role: Annotated[NodeRole, typer.Option(help="The peer's role.")],
    public_key: Annotated[str, typer.Option(help="The peer's public key (from its `init`).")],
    address: Annotated[str, typer.Option(help="The peer's control-plane URL.")] = "",
) -> None:
    """Add (or replace) a peer this node will talk to."""
    try:
        public_key_from_text(public_key)
        config = NodeConfig.load(home)
        config.add_peer(Peer(name=name, role=role, public_key=public_key, address=address))
        config.save(home)
    except (PartyError, ValueError) as exc:
        raise fail(str(exc), 2) from None
    typer.echo(f"peer {name} added")


@app.command("add-dataset")
def add_dataset(
    home: Home,
    name: Annotated[str, typer.Argument(help="The name jobs will use.")],
    path: Annotated[Path, typer.Argument(help="CSV or Parquet file on this node.")],
    subject_column: Annotated[
        str, typer.Option(help="Column with the consent ledger's subject id (gates job input).")
    ] = "subject_id",
) -> None:
    """Register a table under a name; peers only ever see the name."""
    try:
        inspect_table(path).require([subject_column])
        config = NodeConfig.load(home)
        config.datasets[name] = Dataset(path=str(path.resolve()), subject_column=subject_column)
        config.save(home)
    except (PartyError, ValueError) as exc:
        raise fail(str(exc), 2) from None
    typer.echo(f"dataset {name} -> {path.resolve()}")


@app.command("start")
def start(
    home: Home,
    job_timeout: Annotated[
        float, typer.Option(help="Longest a job may run before it is failed, seconds.")
    ] = 600,
) -> None:
    """Run the node until stopped: its control plane and its Flower component.

    Brand: the SuperLink and, per approved job, the ServerApp run. Partner: its relay target
    (this process, which alone holds data, keys and job state) and its SuperNode. Jobs that had
    not ended when the node last stopped are failed with a reason (and the peer told).
    """
    import uvicorn

    from api.app import create_app
    from api.settings import ApiSettings
    from consent.ledger import ConsentLedger
    from parties.local_flower import LocalFlower
    from parties.node import PecNode
    from parties.node_runner import FlowerBrandRunner, PartnerRelay

    try:
        config = NodeConfig.load(home)
        settings = ApiSettings()
        db = config.database.url or None
        ledger = ConsentLedger.open(home, settings.consent_db or db)
        node = PecNode.open(home, ledger, settings.node_db or db)
        port = int(config.flower.superlink.rsplit(":", 1)[1])
    except (PecError, ValueError) as exc:
        raise fail(str(exc), 2) from None
    for job_id in node.recover():
        typer.echo(f"job {job_id}: failed (the node restarted while it ran)")
    flower = LocalFlower(home / "flower", superlink_port=port)
    for name in flower.reap_stale():
        typer.echo(f"stopped a {name} left running by a previous run of this node")
    # uvicorn re-raises SIGTERM after its graceful shutdown: end through `finally` instead, so
    # the SuperLink or SuperNode this node started stops with it
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    relay: PartnerRelay | None = None
    try:
        if config.node.role is NodeRole.BRAND:
            flower.start_superlink()
            flower.wait_superlink()
            node.runner = FlowerBrandRunner(flower, timeout=job_timeout)
        else:
            relay = PartnerRelay(node, timeout=job_timeout)
            relay.serve()
            flower.start_supernode(relay.address)
            node.runner = relay
        app_ = create_app(ledger, settings=settings, node=node)
        typer.echo(f"node {config.node.name} serving on {config.api.host}:{config.api.port}")
        uvicorn.run(app_, host=config.api.host, port=config.api.port, access_log=False)
    except PecError as exc:
        raise fail(str(exc), 1) from None
    finally:
        flower.stop()
        if relay is not None:
            relay.stop()
        node.store.close()
        ledger.close()
