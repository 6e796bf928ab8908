"""Paillier engine vs plain ``phe``, and one encrypted gradient pass, in one run.

    .venv/bin/python benchmarks/bench_paillier.py [--key-bits 2048] [--rows 100000]
        [--brand-features 10] [--partner-features 30] [--workers 2] [--json]

Prints one line per measurement and, with ``--json``, a JSON object as the last line.
Synthetic data (standard normal features, labels from a logistic model); run by hand, not in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import time

import numpy as np
from phe import paillier  # type: ignore[import-untyped]

from pec.paillier import (
    KeyPair,
    PaillierEngine,
    SlotLayout,
    encode_int_vector,
    encode_matrix,
    encode_vector,
)


def bench_phe(bits: int, count: int) -> float:
    public, _ = paillier.generate_paillier_keypair(n_length=bits)
    values = [secrets.randbelow(1 << 40) for _ in range(count)]
    start = time.perf_counter()
    for v in values:
        public.encrypt(v)
    return count / (time.perf_counter() - start)


def bench_engine(engine: PaillierEngine, count: int) -> tuple[float, float]:
    """Encryptions per second, and the seconds to start the workers and build their tables."""
    start = time.perf_counter()
    engine.encrypt(np.zeros(64))  # start the workers and build their tables outside the clock
    setup = time.perf_counter() - start
    values = np.random.default_rng(1).normal(size=count)
    start = time.perf_counter()
    engine.encrypt(values)
    return count / (time.perf_counter() - start), setup


def workers_rss_mib() -> float:
    """Largest resident memory among this process's descendants (the workers), in MiB (Linux).

    The workers are children of the forkserver, not of this process, hence the /proc walk.
    """
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    family, grew = {os.getpid()}, True
    while grew:
        found = {pid for pid, ppid in parents.items() if ppid in family} - family
        family |= found
        grew = bool(found)
    largest = 0
    for pid in family - {os.getpid()}:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        largest = max(largest, int(line.split()[1]))
        except OSError:
            continue
    return largest / 1024


def bench_packed(engine: PaillierEngine, count: int, layout: SlotLayout) -> float:
    encoded = encode_vector(np.random.default_rng(2).uniform(-1, 1, size=count), frac_bits=24)
    engine.encrypt_packed(encode_vector(np.zeros(8)), layout)
    start = time.perf_counter()
    engine.encrypt_packed(encoded, layout)
    return count / (time.perf_counter() - start)


def gradient_pass(
    keys: KeyPair,
    rows: int,
    brand_features: int,
    partner_features: int,
    workers: int,
    precompute: bool,
) -> dict[str, float]:
    rng = np.random.default_rng(0)
    x_brand = rng.normal(size=(rows, brand_features))
    x_partner = rng.normal(size=(rows, partner_features))
    y = (rng.uniform(size=rows) < 0.22).astype(np.float64)
    w_brand = rng.normal(scale=0.1, size=brand_features)
    w_partner = rng.normal(scale=0.1, size=partner_features)
    brand = PaillierEngine(keys.public_key, keys.private_key, workers=workers)
    partner = PaillierEngine(keys.public_key, workers=workers)
    x_partner_enc = encode_matrix(x_partner)  # partner, once per job
    times: dict[str, float] = {}
    ts = time.perf_counter()
    brand.encrypt(np.zeros(8))  # job start: workers and their tables, outside the pass
    partner.rerandomize(brand.encrypt(np.zeros(1)))
    times["setup_workers_tables_s"] = time.perf_counter() - ts
    if precompute:
        tp = time.perf_counter()
        brand.precompute(rows)  # while the brand waits for its peer, before the pass
        times["precompute_obfuscators_s"] = time.perf_counter() - tp

    t0 = time.perf_counter()
    partner_scores = x_partner @ w_partner  # partner -> brand
    z = x_brand @ w_brand + partner_scores
    residual = 1.0 / (1.0 + np.exp(-z)) - y
    grad_brand = x_brand.T @ residual / rows
    t1 = time.perf_counter()
    enc_residual = brand.encrypt(residual)  # brand -> partner
    t2 = time.perf_counter()
    enc_grad = partner.transpose_dot(x_partner_enc, enc_residual)
    mask_bits = enc_grad.bound_bits + 40
    mask = [
        secrets.randbelow(1 << mask_bits) - (1 << (mask_bits - 1)) for _ in range(len(enc_grad))
    ]
    masked = enc_grad.add_plain(encode_int_vector(mask, enc_grad.exponent))
    layout = SlotLayout(value_bits=masked.bound_bits + 1)
    packed = partner.pack(masked, layout)  # partner -> brand (re-randomized inside)
    t3 = time.perf_counter()
    decrypted = brand.decrypt_packed(packed)  # brand -> partner
    t4 = time.perf_counter()
    grad_int = [m - k for m, k in zip(decrypted.ints, mask, strict=True)]
    grad_partner = np.array([float(v) for v in grad_int]) * 2.0**decrypted.exponent / rows
    t5 = time.perf_counter()
    brand.close()
    partner.close()

    expected = x_partner.T @ residual / rows
    times["plain_parts_s"] = t1 - t0
    times["encrypt_residuals_s"] = t2 - t1
    times["partner_xt_r_mask_pack_s"] = t3 - t2
    times["brand_decrypt_s"] = t4 - t3
    times["unmask_s"] = t5 - t4
    times["total_s"] = t5 - t0
    times["max_abs_error"] = float(np.max(np.abs(grad_partner - expected)))
    times["max_abs_gradient"] = float(np.max(np.abs(expected)))
    times["packed_ciphertexts"] = float(len(packed.ciphertexts))
    _ = grad_brand
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--key-bits", type=int, default=2048)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--brand-features", type=int, default=10)
    parser.add_argument("--partner-features", type=int, default=30)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--phe-count", type=int, default=120)
    parser.add_argument("--engine-count", type=int, default=20000)
    parser.add_argument("--skip-gradient", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    result: dict[str, object] = {
        "machine": f"{platform.machine()} x{os.cpu_count()}, Python {platform.python_version()}",
        "key_bits": args.key_bits,
        "workers": args.workers,
    }
    # phe before and after the engine (a shared machine's load drifts); ratios use the mean
    phe_before = bench_phe(args.key_bits, args.phe_count)
    print(f"phe encrypt (before):            {phe_before:10.1f} ciphertexts/s (1 process)")
    keys = KeyPair.generate(args.key_bits)
    with PaillierEngine(keys.public_key, workers=args.workers) as public_engine:
        pub_rate, pub_setup = bench_engine(public_engine, args.engine_count)
        pub_rss = workers_rss_mib()
    ratio = pub_rate / phe_before
    print(
        f"engine encrypt, public key:  {pub_rate:10.1f} ct/s  x{ratio:.1f} vs phe before"
        f"  (window {public_engine.window_bits}, setup {pub_setup:.1f} s, worker {pub_rss:.0f} MiB)"
    )
    with PaillierEngine(keys.public_key, keys.private_key, workers=args.workers) as key_engine:
        crt_rate, crt_setup = bench_engine(key_engine, args.engine_count)
        crt_rss = workers_rss_mib()
        ratio = crt_rate / phe_before
        print(
            f"engine encrypt, key holder:  {crt_rate:10.1f} ct/s  x{ratio:.1f} vs phe before"
            f"  (window {key_engine.window_bits}, setup {crt_setup:.1f} s,"
            f" worker {crt_rss:.0f} MiB)"
        )
        layout = SlotLayout(value_bits=26, max_terms=1024)
        packed_rate = bench_packed(key_engine, args.engine_count * 20, layout)
        slots = key_engine.slots(layout)
        print(
            f"engine encrypt, packed {slots} x 26-bit: {packed_rate:10.1f} values/s  "
            f"x{packed_rate / phe_before:.1f}"
        )
    phe_after = bench_phe(args.key_bits, args.phe_count)
    phe_rate = (phe_before + phe_after) / 2
    print(f"phe encrypt (after):             {phe_after:10.1f} ciphertexts/s (1 process)")
    print(
        f"vs mean phe {phe_rate:.1f}/s: public x{pub_rate / phe_rate:.1f}, "
        f"key holder x{crt_rate / phe_rate:.1f}, packed values x{packed_rate / phe_rate:.1f}"
    )
    result.update(
        phe_before_per_s=phe_before,
        phe_after_per_s=phe_after,
        window_public=public_engine.window_bits,
        window_key_holder=key_engine.window_bits,
        setup_public_s=pub_setup,
        setup_key_holder_s=crt_setup,
        worker_rss_public_mib=pub_rss,
        worker_rss_key_holder_mib=crt_rss,
        phe_per_s=phe_rate,
        engine_public_per_s=pub_rate,
        engine_key_holder_per_s=crt_rate,
        engine_packed_values_per_s=packed_rate,
        ratio_public=pub_rate / phe_rate,
        ratio_key_holder=crt_rate / phe_rate,
        ratio_packed_values=packed_rate / phe_rate,
    )
    if not args.skip_gradient:
        for label, pre in (("cold", False), ("warm", True)):
            g = gradient_pass(
                keys, args.rows, args.brand_features, args.partner_features, args.workers, pre
            )
            for k, v in g.items():
                print(f"gradient pass ({label}) {k:28s} {v:12.6g}")
            result[f"gradient_pass_{label}"] = g
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
