"""``pec node``: create and inspect a node home (identity, peers, datasets)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from parties.config import Dataset, NodeConfig, NodeRole, Peer, init_node
from parties.errors import PartyError
from parties.identity import NodeIdentity, public_key_from_text
from pec.psi_cli import fail
from pec.tables import inspect_table

app = typer.Typer(help="A node's home: identity, peers and datasets.", no_args_is_help=True)
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
