"""``pec vfl``: vertical federated logistic regression from the command line."""

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

Optimizer = Annotated[str, typer.Option(help="adam, sgd or nesterov (same on both sides).")]
LearningRate = Annotated[float, typer.Option(min=0.0, help="Optimizer step size.")]
L2 = Annotated[float, typer.Option(min=0.0, help="L2 penalty on the weights.")]
Momentum = Annotated[float, typer.Option(min=0.0, max=0.99, help="SGD/Nesterov momentum.")]


@app.command("local")
def local(
    brand: Annotated[Path, typer.Option(help="Brand table: id, label(s), brand features.")],
    partner: Annotated[Path, typer.Option(help="Partner table: id and partner features.")],
    id_column: Annotated[str, typer.Option("--id", help="The id column both tables share.")],
    label: Annotated[
        list[str], typer.Option(help="Label column (0/1); repeat for several models.")
    ],
    out: Annotated[Path, typer.Option(help="Output directory (written only on success).")],
    test_brand: Annotated[Path | None, typer.Option(help="Brand test rows to score.")] = None,
    partner_id: Annotated[
        str | None, typer.Option(help="The partner's id column, if named differently.")
    ] = None,
    id_kind: Annotated[str, typer.Option(help="raw, phone (E.164) or email.")] = "raw",
    test_partner: Annotated[Path | None, typer.Option(help="Partner test rows.")] = None,
    brand_feature: Annotated[
        list[str] | None, typer.Option(help="Brand feature column (default: all others).")
    ] = None,
    partner_feature: Annotated[
        list[str] | None, typer.Option(help="Partner feature column (default: all others).")
    ] = None,
    key_bits: Annotated[int, typer.Option(min=512, help="Paillier modulus bits.")] = 2048,
    seed: Annotated[int, typer.Option(help="Seed of the split and batch order.")] = 0,
    epochs: Annotated[int, typer.Option(min=1, help="Most passes over the data.")] = 8,
    batch_size: Annotated[
        int, typer.Option(min=0, help="Rows per step (0 = two steps per epoch).")
    ] = 0,
    optimizer: Optimizer = "nesterov",
    learning_rate: LearningRate = 1.0,
    momentum: Momentum = 0.7,
    l2: L2 = 1e-4,
    patience: Annotated[int, typer.Option(min=1, help="Epochs without progress.")] = 3,
    stop_on: Annotated[str, typer.Option(help="Early stopping on valid auc or loss.")] = "auc",
    timeout: Annotated[float, typer.Option(min=10, help="Give up after this many s.")] = 3600,
    workers: Annotated[int, typer.Option(min=0, help="Worker processes (0 = cores).")] = 0,
    transport: Annotated[
        str,
        typer.Option(
            help="stream: after an offer over Flower, a direct pinned-TLS stream carries the "
            "job (partner dials out); flower: every message over Flower."
        ),
    ] = "stream",
    positive_weight: Annotated[
        float,
        typer.Option(
            min=0.0, help="Weight of positive rows in the loss (0 = negatives/positives)."
        ),
    ] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """Train one model per label between two local parties over a real Flower deployment."""
    from pec.vfl_local import VflLocalOptions, run_vfl_local

    if optimizer not in ("adam", "sgd", "nesterov") or stop_on not in ("auc", "loss"):
        raise fail("--optimizer must be adam, sgd or nesterov; --stop-on auc or loss", 2)
    if transport not in ("stream", "flower"):
        raise fail("--transport must be stream or flower", 2)
    options = VflLocalOptions(
        id_column=id_column,
        labels=tuple(label),
        partner_id_column=partner_id,
        id_kind=id_kind,
        brand_features=tuple(brand_feature) if brand_feature else None,
        partner_features=tuple(partner_feature) if partner_feature else None,
        key_bits=key_bits,
        seed=seed,
        epochs=epochs,
        batch_size=batch_size,
        optimizer=optimizer,
        learning_rate=learning_rate,
        momentum=momentum,
        l2=l2,
        patience=patience,
        stop_on=stop_on,
        timeout=timeout,
        workers=workers,
        transport=transport,
        positive_weight=positive_weight,
    )
    try:
        with progress_bars(_stderr) as on_progress:
            metrics = run_vfl_local(
                brand,
                partner,
                out,
                options,
                test_brand=test_brand,
                test_partner=test_partner,
                progress=on_progress,
            )
    except InputError as exc:
        raise fail(str(exc), 2) from None
    except PecError as exc:
        raise fail(str(exc), 1) from None
    if as_json:
        sys.stdout.write(json.dumps(metrics) + "\n")
        return
    for name, model in metrics["models"].items():
        _stderr.print(
            f"[bold]{name}[/]: AUC {model['auc']}, KS {model['ks']}, "
            f"{model['epochs']} epochs (best {model['best_epoch']})"
        )
    _stderr.print(
        f"{metrics['train_rows']} training rows, {metrics['test_rows']} evaluated "
        f"({metrics['evaluated_on']}); {metrics['round_trips']} round trips "
        f"({metrics['transport']}); "
        f"{metrics['seconds_end_to_end']} s; outputs in {out}",
        markup=False,  # a path, not markup
    )


@app.command("serve")
def serve(
    table: Annotated[Path, typer.Argument(help="This partner's table (CSV or Parquet).")],
    job_id: Annotated[str, typer.Option(help="The approved job.")],
    id_column: Annotated[str, typer.Option("--id", help="The id column.")],
    out: Annotated[Path, typer.Option(help="This partner's output directory.")],
    test: Annotated[Path | None, typer.Option(help="Rows to score after training.")] = None,
    id_kind: Annotated[str, typer.Option(help="raw, phone (E.164) or email.")] = "raw",
    feature: Annotated[
        list[str] | None, typer.Option(help="Feature column (default: all others).")
    ] = None,
    host: Annotated[str, typer.Option(help="Listen address (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port the SuperNode's relay dials.")] = 19201,
    min_key_bits: Annotated[int, typer.Option(help="Smallest Paillier key accepted.")] = 2048,
    optimizer: Optimizer = "nesterov",
    learning_rate: LearningRate = 1.0,
    momentum: Momentum = 0.7,
    l2: L2 = 1e-4,
    workers: Annotated[int, typer.Option(min=0, help="Worker processes (0 = cores).")] = 0,
    timeout: Annotated[float, typer.Option(min=1, help="Give up after this many s.")] = 3600,
) -> None:
    """Serve one approved VFL job to the partner's Flower relay; exit when it completes."""
    from federated.model import OptimizerConfig, OptimizerKind
    from federated.partner import PartnerConfig
    from parties.relay_server import RelayServer
    from parties.vfl_job import VflRelayJob
    from pec.vfl_tables import load_party_table

    try:
        train = load_party_table(
            table, id_column, role="partner", features=feature, id_kind=id_kind
        )
        test_table = None
        if test is not None:
            test_table = load_party_table(
                test,
                id_column,
                role="partner test",
                features=list(train.feature_names),
                id_kind=id_kind,
            )
        config = PartnerConfig(
            optimizer=OptimizerConfig(
                kind=OptimizerKind(optimizer),
                learning_rate=learning_rate,
                l2=l2,
                momentum=momentum,
            ),
            min_key_bits=min_key_bits,
            workers=workers or 2,
        )
        job = VflRelayJob(job_id, train, out, test=test_table, config=config, workers=workers)
        job.timeout = timeout
        server = RelayServer(job, host, port)
    except (InputError, ValueError, OSError) as exc:
        raise fail(str(exc), 2) from None
    _stderr.print(f"serving VFL job {job_id} on {server.address} (relay target of the SuperNode)")
    outcome = server.serve(timeout)
    _stderr.print(f"job {job_id}: {outcome}")
    if outcome != "completed":
        raise typer.Exit(1)
