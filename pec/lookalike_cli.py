"""``pec lookalike``: expand a brand's seed to a lookalike audience among a partner's population."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from pec.errors import InputError, PecError
from pec.psi_cli import fail, progress_bars

# the group's summary (its help) is in pec.cli.GROUPS, so that `pec --help` need not import it
app = typer.Typer(no_args_is_help=True)
_stderr = Console(stderr=True)

LearningRate = Annotated[float, typer.Option(min=0.0, help="Nesterov step size.")]
L2 = Annotated[float, typer.Option(min=0.0, help="L2 penalty on the weights.")]
Momentum = Annotated[float, typer.Option(min=0.0, max=0.99, help="Nesterov momentum.")]
MinCell = Annotated[
    int, typer.Option(min=1, help="Smallest released score band and smallest audience.")
]


@app.command("local")
def local(
    brand: Annotated[Path, typer.Option(help="The brand's seed: id and a 0/1 label.")],
    partner: Annotated[Path, typer.Option(help="The partner's population: id and features.")],
    id_column: Annotated[str, typer.Option("--id", help="The id column both tables share.")],
    label: Annotated[str, typer.Option(help="The seed's 0/1 label column (1 = to look like).")],
    out: Annotated[Path, typer.Option(help="Output directory (written only on success).")],
    audience_size: Annotated[
        int | None, typer.Option(min=1, help="Pick the N best-scoring people.")
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(help="Pick everyone with a 0-1 score at least T.")
    ] = None,
    partner_id: Annotated[
        str | None, typer.Option(help="The partner's id column, if named differently.")
    ] = None,
    id_kind: Annotated[str, typer.Option(help="raw, phone (E.164) or email.")] = "raw",
    partner_feature: Annotated[
        list[str] | None, typer.Option(help="Partner feature column (default: all others).")
    ] = None,
    bands: Annotated[
        int, typer.Option(min=2, max=100, help="Score bands of the distribution.")
    ] = 20,
    min_cell: MinCell = 20,
    key_bits: Annotated[int, typer.Option(min=512, help="Paillier modulus bits.")] = 2048,
    seed: Annotated[int, typer.Option(help="Seed of the split and batch order.")] = 0,
    epochs: Annotated[int, typer.Option(min=1, help="Most passes over the data.")] = 8,
    learning_rate: LearningRate = 1.0,
    momentum: Momentum = 0.7,
    l2: L2 = 1e-4,
    patience: Annotated[int, typer.Option(min=1, help="Epochs without progress.")] = 3,
    timeout: Annotated[float, typer.Option(min=10, help="Give up after this many s.")] = 3600,
    workers: Annotated[int, typer.Option(min=0, help="Worker processes (0 = cores).")] = 0,
    transport: Annotated[
        str, typer.Option(help="stream (direct pinned-TLS stream after a Flower offer) or flower.")
    ] = "stream",
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Train on the overlap, score the partner's population, pick an audience over Flower."""
    from federated.lookalike import AudienceChoice
    from pec.lookalike_local import LookalikeLocalOptions, run_lookalike_local

    if (audience_size is None) == (threshold is None):
        raise fail("give exactly one of --audience-size N or --threshold T", 2)
    if threshold is not None and not 0 < threshold < 1:
        raise fail("--threshold is a 0-1 score strictly between 0 and 1", 2)
    if transport not in ("stream", "flower"):
        raise fail("--transport must be stream or flower", 2)
    options = LookalikeLocalOptions(
        id_column=id_column,
        label=label,
        audience=AudienceChoice(threshold=threshold, size=audience_size),
        partner_id_column=partner_id,
        id_kind=id_kind,
        partner_features=tuple(partner_feature) if partner_feature else None,
        bands=bands,
        min_cell=min_cell,
        key_bits=key_bits,
        seed=seed,
        epochs=epochs,
        learning_rate=learning_rate,
        momentum=momentum,
        l2=l2,
        patience=patience,
        timeout=timeout,
        workers=workers,
        transport=transport,
    )
    try:
        with progress_bars(_stderr) as on_progress:
            summary = run_lookalike_local(brand, partner, out, options, progress=on_progress)
    except InputError as exc:
        raise fail(str(exc), 2) from None
    except PecError as exc:
        raise fail(str(exc), 1) from None
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
        return
    audience, holdout = summary["audience"], summary["holdout"]
    lift = audience["expected_lift"]
    _stderr.print(
        f"audience [bold]{audience['handle']}[/]: {audience['size']:,} people "
        f"(score >= {audience['cut_score']}), expected lift "
        f"{'n/a' if lift is None else f'{lift}x'} on the holdout; "
        f"holdout AUC {holdout['auc']}, top-decile lift {holdout.get('lift_by_decile', ['n/a'])[0]}"
    )
    _stderr.print(
        f"{summary['aligned_rows']:,} seed people matched; "
        f"{summary['distribution']['suppressed_bands']} of {bands} bands suppressed; "
        f"{summary['seconds_end_to_end']} s; brand outputs in {out}, "
        f"the partner's audience in {summary['partner']['audience_file']}",
        markup=False,  # paths, not markup
    )


@app.command("serve")
def serve(
    table: Annotated[Path, typer.Argument(help="This partner's whole population (CSV/Parquet).")],
    job_id: Annotated[str, typer.Option(help="The approved job.")],
    id_column: Annotated[str, typer.Option("--id", help="The id column.")],
    out: Annotated[Path, typer.Option(help="This partner's output directory (the audience).")],
    id_kind: Annotated[str, typer.Option(help="raw, phone (E.164) or email.")] = "raw",
    feature: Annotated[
        list[str] | None, typer.Option(help="Feature column (default: all others).")
    ] = None,
    min_cell: MinCell = 20,
    host: Annotated[str, typer.Option(help="Listen address (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port the SuperNode's relay dials.")] = 19201,
    min_key_bits: Annotated[int, typer.Option(help="Smallest Paillier key accepted.")] = 2048,
    learning_rate: LearningRate = 1.0,
    momentum: Momentum = 0.7,
    l2: L2 = 1e-4,
    workers: Annotated[int, typer.Option(min=0, help="Worker processes (0 = cores).")] = 0,
    timeout: Annotated[float, typer.Option(min=1, help="Give up after this many s.")] = 3600,
) -> None:
    """Serve one approved lookalike job to the partner's Flower relay; exit when it completes."""
    from federated.model import OptimizerConfig, OptimizerKind
    from federated.partner import PartnerConfig
    from parties.lookalike_job import LookalikeRelayJob
    from parties.relay_server import RelayServer
    from pec.vfl_tables import load_party_table

    try:
        population = load_party_table(
            table, id_column, role="partner", features=feature, id_kind=id_kind
        )
        config = PartnerConfig(
            optimizer=OptimizerConfig(
                kind=OptimizerKind.NESTEROV,
                learning_rate=learning_rate,
                l2=l2,
                momentum=momentum,
            ),
            min_key_bits=min_key_bits,
            workers=workers or 2,
        )
        job = LookalikeRelayJob(
            job_id, population, out, config=config, workers=workers, min_cell=min_cell
        )
        job.timeout = timeout
        server = RelayServer(job, host, port)
    except (InputError, ValueError, OSError) as exc:
        raise fail(str(exc), 2) from None
    _stderr.print(
        f"serving lookalike job {job_id} over {len(population.ids):,} people on "
        f"{server.address} (relay target of the SuperNode)"
    )
    outcome = server.serve(timeout)
    _stderr.print(f"job {job_id}: {outcome}")
    if outcome != "completed":
        raise typer.Exit(1)
