"""One process against torchrun data parallelism on this machine, same recipe, one invocation.

    python benchmarks/ddp_speed.py                       # fast preset, 1 process vs 2
    python benchmarks/ddp_speed.py --preset cnn --epochs 2 --nproc 2 4

The single process gets every core (PyTorch's default threads); with N processes
each gets cores / N threads (OMP_NUM_THREADS), so both use the same CPU. The time
compared is ``train_seconds`` (the training loop with per-epoch validation);
the report ends with each configuration's speed-up over one process and its test
accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def train(preset: str, epochs: int | None, nproc: int, out: Path, extra: list[str]) -> dict:
    cores = os.cpu_count() or 1
    cmd = ["-m", "fittingroom", "train", "--preset", preset, "--quiet", "--out", str(out), *extra]
    if epochs:
        cmd += ["--epochs", str(epochs)]
    env = dict(os.environ)
    if nproc == 1:
        cmd = [sys.executable, *cmd]
    else:
        env["OMP_NUM_THREADS"] = str(max(1, cores // nproc))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *cmd]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"error: {' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    return {"nproc": nproc, "train_seconds": metrics["train_seconds"], "test_accuracy": metrics["test_accuracy"],
            "world_size": metrics["world_size"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--epochs", type=int, default=None, help="default: the preset's")
    parser.add_argument("--nproc", type=int, nargs="+", default=[2], help="process counts to compare with 1")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to train --set")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    extra = [item for kv in args.set for item in ("--set", kv)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, nproc in enumerate([1, *args.nproc]):
            rows.append(train(args.preset, args.epochs, nproc, Path(tmp) / f"run{i}", extra))
            print(f"{nproc} process(es): {rows[-1]['train_seconds']:7.1f} s  test accuracy {rows[-1]['test_accuracy']:.4f}",
                  flush=True)
    base = rows[0]["train_seconds"]
    for row in rows:
        row["speed_up"] = base / row["train_seconds"]
    print(f"\n{'processes':>9}  {'train s':>8}  {'speed-up':>8}  test acc   ({args.preset}, {os.cpu_count()} CPUs)")
    for row in rows:
        print(f"{row['nproc']:>9}  {row['train_seconds']:8.1f}  {row['speed_up']:7.2f}x  {row['test_accuracy']:.4f}")
    if args.json:
        args.json.write_text(json.dumps({"preset": args.preset, "epochs": args.epochs, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
