"""``pec psi``: private set intersection from the command line."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from pec.errors import InputError, PecError
from psi.errors import InvalidKeyKind
from psi.wire import Reveal

if TYPE_CHECKING:
    from pec.psi_local import PsiLocalOptions

# Every ``pec`` command imports this module (for ``fail`` and the progress bars), so the PSI
# engine and pandas are imported inside the commands that use them: the CLI starts fast.

# the group's summary (its help) is in pec.cli.GROUPS, so that `pec --help` need not import it
app = typer.Typer(no_args_is_help=True)
_stderr = Console(stderr=True)


def fail(message: str, code: int) -> typer.Exit:
    """Print a one-line error to stderr and return the exit to raise.

    The message is printed as it is (a path such as ``leads[old].csv`` is not rich markup), on
    one line.
    """
    line = " ".join(message.splitlines())
    _stderr.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@app.command("local")
def local(
    left: Annotated[Path, typer.Argument(help="Left table (CSV or Parquet).")],
    right: Annotated[Path, typer.Argument(help="Right table (CSV or Parquet).")],
    key: Annotated[
        list[str],
        typer.Option(
            "--key",
            help="COL[:KIND] or LEFTCOL=RIGHTCOL[:KIND]; KIND is phone, email or raw "
            "(inferred from the column name when omitted). Repeat for multi-key (OR) matching.",
        ),
    ],
    reveal: Annotated[
        Reveal, typer.Option(help="Who learns the matched rows; count: only the count.")
    ],
    out: Annotated[Path, typer.Option(help="Output directory (written only on success).")],
    payload: Annotated[
        list[str] | None,
        typer.Option(
            "--payload",
            help="Right-side column to deliver to matched left rows (labeled PSI; "
            "needs --reveal left). Repeatable.",
        ),
    ] = None,
    align: Annotated[
        bool,
        typer.Option(
            help="With --reveal both: add a pec_match_id column, equal on both sides for a "
            "matched pair, to line up rows (e.g. for federated training)."
        ),
    ] = False,
    region: Annotated[str, typer.Option(help="Default phone region.")] = "CN",
    email_aliases: Annotated[
        bool, typer.Option(help="Fold provider aliases (Gmail dots, +tags).")
    ] = False,
    chunk_size: Annotated[int, typer.Option(min=1, help="Values per message.")] = 65_536,
    workers: Annotated[
        int,
        typer.Option(
            min=0,
            help="Worker processes per party; 0 = half the cores each (both parties share this "
            "machine); 1 = the party process computes itself.",
        ),
    ] = 0,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for the peer.")] = 600.0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summary as the last line of stdout.")
    ] = False,
) -> None:
    """Run both sides of a PSI on this machine, as two processes that exchange only messages."""
    from pec.psi_local import PsiLocalOptions, check_inputs, parse_key_spec

    try:
        keys = tuple(parse_key_spec(spec) for spec in key)
    except (InvalidKeyKind, InputError) as exc:
        raise fail(str(exc), 2) from None
    options = PsiLocalOptions(
        keys=keys,
        reveal=reveal,
        payload=tuple(payload or ()),
        region=region,
        email_aliases=email_aliases,
        chunk_size=chunk_size,
        workers=workers,
        timeout=timeout,
        align=align,
    )
    try:
        check_inputs(left, right, options)
        summary = run_with_progress(left, right, out, options)
    except (InputError, InvalidKeyKind, ValueError) as exc:
        raise fail(str(exc), 2) from None
    except PecError as exc:
        raise fail(str(exc), 1) from None
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
    else:
        _print_summary(summary)


@contextmanager
def progress_bars(console: Console) -> Iterator[Callable[[str, str, int, int], None]]:
    """A progress bar per (party, stage) on ``console``; yields the callback that feeds them."""
    columns = (
        TextColumn("{task.description:<30}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    # The display (and its refresh thread) starts with the first event, so that the work can
    # first fork its processes from a single-threaded process.
    bars = Progress(*columns, console=console, transient=False, refresh_per_second=2)
    tasks: dict[tuple[str, str], TaskID] = {}

    def on_progress(role: str, stage: str, done: int, total: int) -> None:
        if not tasks:
            bars.start()
        key = (role, stage)
        if key not in tasks:
            tasks[key] = bars.add_task(f"{role}: {stage}", total=total)
        bars.update(tasks[key], completed=done, total=total)

    try:
        yield on_progress
    finally:
        if tasks:
            bars.stop()


def run_with_progress(
    left: Path, right: Path, out: Path, options: PsiLocalOptions
) -> dict[str, object]:
    """Run a local PSI with a progress bar per party and stage on stderr."""
    from pec.psi_local import run_psi_local

    with progress_bars(_stderr) as on_progress:
        return run_psi_local(left, right, out, options, progress=on_progress)


@app.command("aggregate")
def aggregate(
    brand: Annotated[Path, typer.Argument(help="The brand's table (its set, e.g. lost leads).")],
    partner: Annotated[Path, typer.Argument(help="The partner's table (key + group column).")],
    key: Annotated[str, typer.Option(help="COL[:KIND] or BRANDCOL=PARTNERCOL[:KIND].")],
    group: Annotated[
        str, typer.Option(help="The partner's column to count by; a*b crosses two columns.")
    ],
    out: Annotated[Path, typer.Option(help="Output directory (written only on success).")],
    min_cell: Annotated[int, typer.Option(min=1, help="Cells below this are suppressed.")] = 20,
    epsilon: Annotated[
        float | None, typer.Option(help="Laplace noise with this epsilon per release.")
    ] = None,
    key_bits: Annotated[int, typer.Option(help="Paillier modulus bits.")] = 2048,
    region: Annotated[str, typer.Option(help="Default phone region.")] = "CN",
    workers: Annotated[int, typer.Option(min=0, help="Processes per party; 0 = cores.")] = 0,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for the peer.")] = 600.0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summary as the last line of stdout.")
    ] = False,
) -> None:
    """Count the partner's GROUP values over the brand's set; the brand learns only the cells."""
    from pec.aggregate_local import AggregateOptions, run_aggregate_local
    from pec.psi_local import parse_key_spec

    try:
        options = AggregateOptions(
            key=parse_key_spec(key),
            group=group,
            min_cell=min_cell,
            epsilon=epsilon,
            key_bits=key_bits,
            region=region,
            workers=workers,
            timeout=timeout,
        )
        with progress_bars(_stderr) as on_progress:
            summary = run_aggregate_local(brand, partner, out, options, progress=on_progress)
    except (InputError, InvalidKeyKind, ValueError) as exc:
        raise fail(str(exc), 2) from None
    except PecError as exc:
        raise fail(str(exc), 1) from None
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
        return
    console = Console()
    console.print(
        f"[bold]aggregate[/] {escape(str(summary['group']))} over {summary['intersection']} "
        f"matched records (min cell {summary['min_cell']}, epsilon {summary['epsilon']}):"
    )
    for label, count in summary["cells"].items():  # data, not markup
        console.print(f"  {label:<20} {'suppressed' if count is None else count}", markup=False)


@app.command("serve")
def serve(
    table: Annotated[Path, typer.Argument(help="This partner's table (CSV or Parquet).")],
    job_id: Annotated[str, typer.Option(help="The approved job (its PSI run id).")],
    key: Annotated[
        list[str], typer.Option("--key", help="LEFTCOL=RIGHTCOL[:KIND] as agreed with the brand.")
    ],
    reveal: Annotated[Reveal, typer.Option(help="The approved reveal mode.")],
    out: Annotated[Path, typer.Option(help="This partner's output directory.")],
    host: Annotated[str, typer.Option(help="Listen address (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port the SuperNode's relay dials.")] = 19200,
    region: Annotated[str, typer.Option(help="Default phone region.")] = "CN",
    timeout: Annotated[float, typer.Option(min=1, help="Give up after this many seconds.")] = 3600,
    align: Annotated[bool, typer.Option(help="Add pec_match_id (needs --reveal both).")] = False,
) -> None:
    """Serve one approved PSI job to the partner's Flower relay; exit when it completes."""
    from parties.psi_job import PsiJobSide
    from parties.relay_server import RelayServer
    from pec.psi_local import parse_key_spec
    from pec.tables import inspect_table
    from psi.wire import Role

    try:
        pairs = [parse_key_spec(spec) for spec in key]
        inspect_table(table, role="partner").require([k.right for k in pairs], role="partner")
        side = PsiJobSide(
            job_id, Role.RIGHT, table, ";".join(key), reveal, out, region=region, align=align
        )
        server = RelayServer(side, host, port)
    except (InputError, InvalidKeyKind, ValueError, OSError) as exc:
        raise fail(str(exc), 2) from None
    _stderr.print(f"serving job {job_id} on {server.address} (relay target of the SuperNode)")
    outcome = server.serve(timeout)
    _stderr.print(f"job {job_id}: {outcome}")
    if outcome != "completed":
        raise typer.Exit(1)


def _print_summary(summary: dict[str, object]) -> None:
    console = Console()
    console.print(
        f"[bold]PSI[/] {summary['reveal']}: left {summary['left_rows']} rows, "
        f"right {summary['right_rows']} rows, intersection [bold]{summary['intersection']}[/] "
        f"in {summary['seconds']} s"
    )
    # column names are data, not markup
    console.print(f"per key: {summary['per_key']}", markup=False)
    console.print(
        f"invalid keys: left {summary['left_invalid']}, right {summary['right_invalid']}",
        markup=False,
    )
    console.print(f"outputs: {', '.join(summary['outputs'])}")  # type: ignore[arg-type]
