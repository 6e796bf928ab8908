"""``pec node``: create and inspect a node home (identity, peers, datasets)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from parties.config import Dataset, NodeConfig, NodeRole, Peer, init_node
from parties.errors import PartyError
from parties.identity import NodeIdentity, public_key_from_text
from pec.errors import PecError
from pec.psi_cli import fail
from pec.tables import inspect_table

if TYPE_CHECKING:
    from parties.local_flower import LocalFlower

# the group's summary (its help) is in pec.cli.GROUPS, so that `pec --help` need not import it
app = typer.Typer(no_args_is_help=True)


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
        console.print(f"dataset {name}: {dataset.describe()}")


@app.command("add-peer")
def add_peer(
    home: Home,
    name: Annotated[str, typer.Option(help="The peer's name.")],
    role: Annotated[NodeRole, typer.Option(help="The peer's role.")],
    public_key: Annotated[str, typer.Option(help="The peer's public key (from its `init`).")],
    address: Annotated[str, typer.Option(help="The peer's control-plane URL.")] = "",
    supernode_key: Annotated[
        str, typer.Option(help="A partner's SuperNode public key (from its `pec node tls`).")
    ] = "",
) -> None:
    """Add (or replace) a peer this node will talk to."""
    try:
        public_key_from_text(public_key)
        config = NodeConfig.load(home)
        config.add_peer(Peer(name=name, role=role, public_key=public_key, address=address,
                             supernode_key=supernode_key))  # fmt: skip
        config.save(home)
    except (PartyError, ValueError) as exc:
        raise fail(str(exc), 2) from None
    typer.echo(f"peer {name} added")


@app.command("tls")
def tls(
    home: Home,
    host: Annotated[
        list[str] | None,
        typer.Option(help="Brand: a name or address partners reach the SuperLink at (repeat)."),
    ] = None,
    superlink_ca: Annotated[
        Path | None, typer.Option(help="Partner: the brand's SuperLink CA certificate (ca.crt).")
    ] = None,
) -> None:
    """Secure the node's Flower link: TLS, and SuperNode authentication.

    Brand: makes a CA and the SuperLink's certificate for --host (give tls/ca.crt to partners).
    Partner: keeps the brand's CA and makes this SuperNode's key (give the printed public key to
    the brand, which adds it with `pec node add-peer ... --supernode-key`).
    """
    import shutil

    from parties.flower_tls import make_superlink_tls, make_supernode_key

    try:
        config = NodeConfig.load(home)
        folder = home / "tls"
        if config.node.role is NodeRole.BRAND:
            if not host or superlink_ca is not None:
                raise PartyError("a brand node takes --host (one or more), not --superlink-ca")
            # the brand's own `flwr` CLI reaches its SuperLink on loopback
            names = list(dict.fromkeys([*host, "127.0.0.1", "localhost"]))
            made = make_superlink_tls(folder, hosts=names)
            message = f"SuperLink TLS for {', '.join(host)}; give {made.ca_cert} to partners"
        else:
            if superlink_ca is None or host:
                raise PartyError("a partner node takes --superlink-ca, not --host")
            from cryptography import x509

            x509.load_pem_x509_certificate(superlink_ca.read_bytes())
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(superlink_ca, folder / "ca.crt")
            key = make_supernode_key(folder)
            message = (
                "SuperNode key made; give the brand this public key (pec node add-peer ... "
                f"--supernode-key):\n{key.public_key.read_text().strip()}"
            )
        config.flower.tls = True
        config.save(home)
    except (PartyError, ValueError, OSError) as exc:
        raise fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, 2) from None
    typer.echo(message)


@app.command("add-dataset")
def add_dataset(
    home: Home,
    name: Annotated[str, typer.Argument(help="The name jobs will use.")],
    path: Annotated[
        Path | None, typer.Argument(help="CSV or Parquet file on this node (or --sql-table).")
    ] = None,
    subject_column: Annotated[
        str, typer.Option(help="Column with the consent ledger's subject id (gates job input).")
    ] = "subject_id",
    feature: Annotated[
        list[str] | None,
        typer.Option(help="A numeric column models may use (repeat); a partner's own choice."),
    ] = None,
    sql_url: Annotated[
        str, typer.Option(help="SQLAlchemy URL of the database holding --sql-table.")
    ] = "",
    sql_table: Annotated[str, typer.Option(help="A SQL table (name or schema.name).")] = "",
) -> None:
    """Register a table under a name; peers only ever see the name."""
    try:
        features = list(feature or [])
        columns = [subject_column, *features]
        if path is not None:
            inspect_table(path).require(columns)
            source = {"path": str(path.resolve())}
        else:
            source = {"sql_url": sql_url, "sql_table": sql_table}
        dataset = Dataset.model_validate(
            source | {"subject_column": subject_column, "features": features}
        )
        if path is None:
            _require_sql_columns(sql_url, sql_table, columns)
        config = NodeConfig.load(home)
        config.datasets[name] = dataset
        config.save(home)
    except (PartyError, ValueError) as exc:
        raise fail(str(exc), 2) from None
    typer.echo(f"dataset {name} -> {dataset.describe()}")


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
    try:
        flower = _flower(home, config, port)
    except (PecError, ValueError) as exc:
        raise fail(str(exc), 2) from None
    for name in flower.reap_stale():
        typer.echo(f"stopped a {name} left running by a previous run of this node")
    # uvicorn re-raises SIGTERM after its graceful shutdown: end through `finally` instead, so
    # the SuperLink or SuperNode this node started stops with it
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    relay: PartnerRelay | None = None
    stopping = threading.Event()
    try:
        if config.node.role is NodeRole.BRAND:
            flower.start_superlink()
            flower.wait_superlink()
            if config.flower.tls:
                _register_partners(home, config, flower)
            node.runner = FlowerBrandRunner(flower, timeout=job_timeout)
        else:
            relay_host, relay_port = config.flower.relay.rsplit(":", 1)
            relay = PartnerRelay(node, host=relay_host, port=int(relay_port),
                                 timeout=job_timeout)  # fmt: skip
            relay.serve()
            if config.flower.supernode == "managed":
                flower.start_supernode(relay.address, superlink=config.flower.superlink)
                threading.Thread(
                    target=_supervise_supernode,
                    args=(flower, relay.address, config.flower.superlink, stopping),
                    daemon=True,
                ).start()
            else:
                typer.echo(f"relay target for an external SuperNode on {relay.address}")
            node.runner = relay
        app_ = create_app(ledger, settings=settings, node=node)
        typer.echo(f"node {config.node.name} serving on {config.api.host}:{config.api.port}")
        uvicorn.run(app_, host=config.api.host, port=config.api.port, access_log=False)
    except PecError as exc:
        raise fail(str(exc), 1) from None
    finally:
        stopping.set()
        flower.stop()
        if relay is not None:
            relay.stop()
        node.store.close()
        ledger.close()


def _flower(home: Path, config: NodeConfig, port: int) -> LocalFlower:
    """The node's Flower component, secured when ``[flower] tls`` is on.

    Raises:
        PartyError: TLS is on but ``pec node tls`` has not made its files.
    """
    from parties.flower_tls import SuperLinkTls, SuperNodeKey
    from parties.local_flower import LocalFlower

    folder = home / "tls"
    host = config.flower.superlink.rsplit(":", 1)[0]
    if not config.flower.tls:
        return LocalFlower(home / "flower", superlink_port=port, superlink_host=host)
    if config.node.role is NodeRole.BRAND:
        tls = SuperLinkTls(folder / "ca.crt", folder / "superlink.crt", folder / "superlink.key")
        needed = [tls.ca_cert, tls.cert, tls.key]
    else:
        key = SuperNodeKey(folder / "supernode.key", folder / "supernode.pub")
        needed = [folder / "ca.crt", key.private_key]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise PartyError(f"[flower] tls is on but {missing[0]} is missing (run pec node tls)")
    if config.node.role is NodeRole.BRAND:
        return LocalFlower(home / "flower", superlink_port=port, superlink_host=host, tls=tls,
                           supernode_auth=True)  # fmt: skip
    return LocalFlower(home / "flower", superlink_port=port, root_certificates=folder / "ca.crt",
                       supernode_key=key)  # fmt: skip


def _register_partners(home: Path, config: NodeConfig, flower: LocalFlower) -> None:
    """Admit the SuperNode of every partner peer that has a key; nobody else gets in."""
    folder = home / "tls" / "peers"
    folder.mkdir(parents=True, exist_ok=True)
    for peer in config.peers:
        if peer.role is NodeRole.PARTNER and peer.supernode_key:
            path = folder / f"{peer.name}.pub"
            path.write_text(peer.supernode_key + "\n")
            flower.register_supernode(path)


def _supervise_supernode(
    flower: LocalFlower, relay: str, superlink: str, stopping: threading.Event
) -> None:
    """Restart the SuperNode whenever it exits while the node runs.

    A SuperNode exits when the SuperLink refuses or drops it: the brand not up yet, its key not
    registered yet, a brand restart. The partner keeps trying every few seconds.
    """
    while not stopping.wait(5.0):
        if not flower.alive("supernode") and not stopping.is_set():
            flower.start_supernode(relay, superlink=superlink)


def _require_sql_columns(url: str, table: str, columns: list[str]) -> None:
    """Check that the SQL table is readable and has the columns (reads its first rows only).

    Raises:
        InputError: unreadable, or a column is missing (named).
    """
    from pec.errors import InputError
    from pec.tables import iter_sql_table

    chunks = iter_sql_table(url, table, chunk_rows=10)
    try:
        first = next(chunks, None)
    finally:
        chunks.close()  # type: ignore[attr-defined]
    if first is None:
        raise InputError(f"SQL table {table!r}: no rows")
    missing = [c for c in columns if c not in first.columns]
    if missing:
        raise InputError(f"SQL table {table!r}: no column {missing[0]!r}")
