"""Federated logistic regression in one process, at production key size, vs pooled baselines.

    .venv/bin/python benchmarks/bench_vfl.py [--data ../shared/datasets] [--name default_credit]
        [--key-bits 2048] [--epochs 5] [--batch-size 4096] [--lr 0.1] [--workers 2] [--json]

Both roles run in this process (``federated.run_in_process``: a wire round trip per message, no
network, no Flower); the brand's and partner's engines share the machine's cores. Reports the test
AUC of the federated model, of a plain pooled logistic regression (torch L-BFGS) and, if
scikit-learn is installed, of ``sklearn.linear_model.LogisticRegression``; wall time, messages and
bytes. Run by hand, not in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from federated import (
    BrandTrainer,
    OptimizerConfig,
    PartnerConfig,
    PartnerTrainer,
    TrainingConfig,
    ks_statistic,
    roc_auc,
    run_in_process,
)
from pec.paillier import KeyPair


def stratified(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    held = []
    for label in (0.0, 1.0):
        idx = rng.permutation(np.flatnonzero(y == label))
        held.append(idx[: round(fraction * len(idx))])
    out = np.sort(np.concatenate(held))
    return np.setdiff1d(np.arange(len(y)), out), out


def pooled_torch_auc(x: np.ndarray, y: np.ndarray, xt: np.ndarray, yt: np.ndarray) -> float:
    a = torch.from_numpy(np.hstack([x, np.ones((len(x), 1))]))
    w = torch.zeros(a.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")
    target = torch.from_numpy(y)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(a @ w, target)
        loss = loss + 0.5 / len(x) * (w[:-1] ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return roc_auc(yt, np.hstack([xt, np.ones((len(xt), 1))]) @ w.detach().numpy())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    default_data = Path(__file__).resolve().parents[2] / "shared" / "datasets"
    parser.add_argument("--data", type=Path, default=default_data)
    parser.add_argument("--name", default="default_credit")
    parser.add_argument("--key-bits", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    guest = pd.read_csv(args.data / f"{args.name}_hetero_guest.csv")
    host = pd.read_csv(args.data / f"{args.name}_hetero_host.csv")
    df = guest.merge(host, on="id", suffixes=("_brand", "_partner"))
    y = df["y"].to_numpy(np.float64)
    xb = df[[c for c in df.columns if c.endswith("_brand")]].to_numpy(np.float64)
    xp = df[[c for c in df.columns if c.endswith("_partner")]].to_numpy(np.float64)
    train, test = stratified(y, 0.2, 0)
    fit, valid = (train[i] for i in stratified(y[train], 0.1, 1))

    config = TrainingConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=OptimizerConfig(learning_rate=args.lr),
        workers=args.workers,
    )
    start = time.perf_counter()
    keys = KeyPair.generate(args.key_bits)
    brand = BrandTrainer("bench", keys, xb[fit], y[fit], xb[valid], y[valid], config)
    partner = PartnerTrainer(
        "bench", xp[fit], xp[valid], PartnerConfig(optimizer=config.optimizer, workers=args.workers)
    )
    transcript = run_in_process(brand, partner)
    seconds = time.perf_counter() - start
    scores = brand.brand_scores(xb[test]) + partner.score(xp[test])

    pooled_train = np.hstack([xb[train], xp[train]])
    pooled_test = np.hstack([xb[test], xp[test]])
    result: dict[str, object] = {
        "data": args.name,
        "key_bits": args.key_bits,
        "workers": args.workers,
        "epochs_run": len(brand.history),
        "best_epoch": brand.best_epoch,
        "train_rows": len(fit),
        "valid_rows": len(valid),
        "test_rows": len(test),
        "seconds": seconds,
        "seconds_per_epoch": seconds / max(1, len(brand.history)),
        "messages": len(transcript.messages),
        "megabytes": transcript.total_bytes / 1e6,
        "auc_federated": roc_auc(y[test], scores),
        "ks_federated": ks_statistic(y[test], scores),
        "auc_pooled_torch": pooled_torch_auc(pooled_train, y[train], pooled_test, y[test]),
    }
    try:
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(max_iter=1000).fit(pooled_train, y[train])
        result["auc_pooled_sklearn"] = roc_auc(y[test], model.decision_function(pooled_test))
    except ImportError:
        pass
    for key, value in result.items():
        print(f"{key:22s} {value}")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
