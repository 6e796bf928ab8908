"""A node home: ``<home>/node.toml`` (who the node is, its peers and datasets) and its keys.

Jobs refer to datasets by name; paths stay on the node that owns them and never cross to a peer.
Errors name the file and the field that is wrong.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import tomli_w
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from parties.errors import NodeConfigError
from parties.identity import NodeIdentity, fingerprint, public_key_from_text

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["CONFIG_FILE", "Dataset", "NodeConfig", "NodeRole", "Peer", "init_node"]

CONFIG_FILE = "node.toml"
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


OUTPUTS_DB = "outputs.sqlite3"


class NodeRole(StrEnum):
    """A brand node coordinates jobs; a partner node answers them."""

    BRAND = "brand"
    PARTNER = "partner"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NodeSection(_Strict):
    """Who the node is."""

    name: Name
    role: NodeRole
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())


class ApiSection(_Strict):
    """Where the node's control plane listens."""

    host: str = "127.0.0.1"
    port: int = Field(default=8700, ge=1, le=65535)


class FlowerSection(_Strict):
    """Flower deployment addresses (brand: where its SuperLink listens; partner: where to dial)."""

    superlink: str = "127.0.0.1:9092"
    stream_host: str = "127.0.0.1"
    """Brand: the address a partner dials for a model or PSI job's direct stream (TLS 1.3,
    pinned per-job certificates); across machines, one the partner can reach. Empty: every
    message of the job goes over Flower instead (slower: a floor of seconds per message)."""
    supernode: str = Field(default="managed", pattern=r"^(managed|external)$")
    """Partner: ``managed`` starts the SuperNode as a child of ``pec node start`` (one machine,
    development); ``external`` leaves it to a separate container or host without the partner's
    data (production, DESIGN rule 2), which relays to ``relay``."""
    relay: str = "127.0.0.1:0"
    """Partner: where the node's relay target listens for its SuperNode (``host:port``; port 0
    picks a free one, for a managed SuperNode)."""
    tls: bool = False
    """Brand: serve TLS with ``tls/superlink.crt`` and admit only the SuperNodes of its partner
    peers (their ``supernode_key``); partner: verify the SuperLink with ``tls/ca.crt`` and sign
    with ``tls/supernode.key``. Made by ``pec node tls``; required across machines."""

    @field_validator("relay")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("relay must be host:port")
        return value


class DatabaseSection(_Strict):
    """The node's own storage; empty means a SQLite file in the node home."""

    url: str = ""

    def outputs_url(self, home: Path) -> str:
        """Where jobs write the tables a modeler names (lead scores).

        This database, or ``outputs.sqlite3`` in the node home when the node keeps its records in
        SQLite there.
        """
        return self.url or f"sqlite:///{(home / OUTPUTS_DB).resolve()}"


class Peer(_Strict):
    """Another node this node talks to."""

    name: Name
    role: NodeRole
    public_key: str
    address: str = ""
    supernode_key: str = ""
    """A partner's SuperNode public key (OpenSSH ``ecdsa-sha2-nistp384 ...``), which a brand
    with ``[flower] tls`` registers on its SuperLink."""

    @field_validator("public_key")
    @classmethod
    def _valid_key(cls, value: str) -> str:
        public_key_from_text(value)
        return value.strip()

    @field_validator("supernode_key")
    @classmethod
    def _valid_supernode_key(cls, value: str) -> str:
        from parties.flower_tls import check_supernode_public_key

        return check_supernode_public_key(value) if value.strip() else ""

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the peer's raw public key, hex."""
        return fingerprint(public_key_from_text(self.public_key))


class Dataset(_Strict):
    """A table the node registered under a name: a CSV or Parquet file, or a SQL table."""

    path: str = ""
    format: str = Field(default="auto", pattern=r"^(auto|csv|parquet)$")
    sql_url: str = ""
    """A SQLAlchemy URL (``postgresql://...``, ``sqlite:///...``) when the table is in a database;
    it may carry a password, so node.toml is owner-readable and the URL never leaves the node."""
    sql_table: str = ""
    """The table (``name`` or ``schema.name``) at ``sql_url``."""
    # the column holding the consent ledger's subject id: a job's input rows are those whose
    # subject is in the ledger's cohort for the job's purpose and recipient (DESIGN rule 4)
    subject_column: str = "subject_id"
    features: list[str] = Field(default_factory=list)
    """Numeric columns this node lets models use (a partner's choice, never the brand's)."""
    written_by: str = ""
    """The job that wrote this table (lead scores), if a job did: only such a table may be
    replaced by a later job's scores."""

    @model_validator(mode="after")
    def _one_source(self) -> Dataset:
        if bool(self.path) == bool(self.sql_url or self.sql_table):
            raise ValueError("a dataset is a file (path) or a SQL table (sql_url and sql_table)")
        if bool(self.sql_url) != bool(self.sql_table):
            raise ValueError("a SQL dataset needs both sql_url and sql_table")
        return self

    def describe(self) -> str:
        """Where the data is, without credentials (for `pec node show`)."""
        if self.path:
            return f"{self.path} ({self.format})"
        return f"SQL table {self.sql_table} ({self.sql_url.split('://', 1)[0]})"


class NodeConfig(_Strict):
    """The whole ``node.toml``."""

    node: NodeSection
    api: ApiSection = Field(default_factory=ApiSection)
    flower: FlowerSection = Field(default_factory=FlowerSection)
    database: DatabaseSection = Field(default_factory=DatabaseSection)
    peers: list[Peer] = Field(default_factory=list)
    datasets: dict[str, Dataset] = Field(default_factory=dict)

    @classmethod
    def load(cls, home: Path) -> NodeConfig:
        """Read ``home/node.toml``.

        Raises:
            NodeConfigError: naming the file and the first bad field.
        """
        path = home / CONFIG_FILE
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise NodeConfigError(f"no {path}: run `pec node init` first") from None
        except tomllib.TOMLDecodeError as exc:
            raise NodeConfigError(f"{path}: not valid TOML ({exc})") from None
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise NodeConfigError(f"{path}: field {where}: {first['msg']}") from None

    def save(self, home: Path) -> Path:
        """Write ``home/node.toml`` atomically."""
        path = home / CONFIG_FILE
        partial = path.with_suffix(".toml.partial")
        partial.write_text(tomli_w.dumps(self.model_dump(mode="json")), encoding="utf-8")
        partial.replace(path)
        return path

    def peer(self, fingerprint_hex: str) -> Peer | None:
        """The peer with this fingerprint, if any."""
        return next((p for p in self.peers if p.fingerprint == fingerprint_hex), None)

    def add_peer(self, peer: Peer) -> None:
        """Add a peer (or replace the one with the same name).

        Raises:
            NodeConfigError: another peer already has this key.
        """
        if any(p.fingerprint == peer.fingerprint and p.name != peer.name for p in self.peers):
            raise NodeConfigError(f"another peer already uses this public key ({peer.name})")
        self.peers = [p for p in self.peers if p.name != peer.name] + [peer]

    def dataset(self, name: str) -> Dataset:
        """A registered dataset.

        Raises:
            NodeConfigError: no dataset by that name (the message lists the registered ones).
        """
        try:
            return self.datasets[name]
        except KeyError:
            known = ", ".join(sorted(self.datasets)) or "none"
            raise NodeConfigError(f"no dataset named {name!r} (registered: {known})") from None

    def dataset_chunks(self, home: Path, name: str) -> Iterator[pd.DataFrame]:
        """The rows of a registered dataset, in chunks of text cells.

        Raises:
            NodeConfigError: no dataset by that name.
            InputError: the file or SQL table cannot be read.
        """
        from pec.tables import iter_sql_table, iter_table

        dataset = self.dataset(name)
        if dataset.sql_url:
            return iter_sql_table(dataset.sql_url, dataset.sql_table)
        return iter_table(self.dataset_path(home, name))

    def dataset_path(self, home: Path, name: str) -> Path:
        """Where a registered dataset lives.

        Raises:
            NodeConfigError: no dataset by that name.
        """
        try:
            path = Path(self.datasets[name].path)
        except KeyError:
            known = ", ".join(sorted(self.datasets)) or "none"
            raise NodeConfigError(f"no dataset named {name!r} (registered: {known})") from None
        return path if path.is_absolute() else home / path


def init_node(home: Path, name: str, role: NodeRole, *, api_port: int = 8700) -> NodeConfig:
    """Create a node home: identity key and ``node.toml``.

    Raises:
        NodeConfigError: the home already holds a node, or the name is invalid.
    """
    if (home / CONFIG_FILE).exists():
        raise NodeConfigError(f"{home} already holds a node ({CONFIG_FILE} exists)")
    try:
        config = NodeConfig(node=NodeSection(name=name, role=role), api=ApiSection(port=api_port))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise NodeConfigError(f"{where}: {first['msg']}") from None
    home.mkdir(parents=True, exist_ok=True)
    NodeIdentity.generate().save(home)
    config.save(home)
    return config
