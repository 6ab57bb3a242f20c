"""Accuracy and training time of the named presets, over several seeds, against a reference in the same run.

    python benchmarks/presets.py --preset fast --seeds 3
    python benchmarks/presets.py --preset mlp-best cnn --seeds 1

For each preset and seed it trains a full run (into a temporary folder) and
records the test accuracy of the final (or restored-best-on-validation)
weights and the training time (the loop with per-epoch validation, as Keras's
``fit`` counts it). Machines are noisy, so the same invocation also runs the
yardstick (``../shared/yardstick.py``, a fixed PyTorch workload) before and
after; times are reported in seconds and in yardsticks (their mean). The goals
of each preset are checked at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from timing import YARDSTICK, yardstick

from fittingroom import TrainConfig, train_run
from fittingroom.runfolder.data import load_data

# preset -> (minimum mean test accuracy, maximum mean training time in yardsticks or None, minimum of every seed)
GOALS = {
    "seed": (0.875, None, None),  # the tutorial's accuracy (0.875-0.897); its speed is measured against Keras
    "fast": (0.884, 1.2, None),
    "mlp-best": (0.905, None, None),
    "cnn": (0.940, 100.0, 0.938),
    "resnet": (0.955, None, None),  # <= 60 s on one GPU; on a CPU it only has to run
}


def run_preset(name: str, seed: int, data, epochs: int | None) -> dict:
    config = TrainConfig.from_preset(name).replace(seed=seed, epochs=epochs)
    with tempfile.TemporaryDirectory() as tmp:
        metrics = train_run(config, out=Path(tmp) / "run", verbose=False, data=data).metrics
    return {k: metrics[k] for k in ("test_accuracy", "val_accuracy", "train_seconds", "epochs", "params", "device",
                                    "precision")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", nargs="+", default=["fast"], help=f"presets to measure ({', '.join(GOALS)})")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per preset (0, 1, 2, ...)")
    parser.add_argument("--epochs", type=int, help="override the presets' epochs (a quick look; goals then not checked)")
    parser.add_argument("--data-dir", help="where Fashion-MNIST is")
    parser.add_argument("--yardstick", type=Path, default=YARDSTICK, help=f"the yardstick script ({YARDSTICK})")
    parser.add_argument("--json", type=Path, help="also write all figures to this file")
    args = parser.parse_args()

    # Each preset's data as it splits it (the cnn preset validates on fewer images), loaded before the timing.
    data = {name: load_data(TrainConfig.from_preset(name).replace(data_dir=args.data_dir)) for name in args.preset}
    ref_before = yardstick(args.yardstick)
    print(f"yardstick before: {ref_before:.2f} s", flush=True)
    results: dict[str, list[dict]] = {}
    for name in args.preset:
        results[name] = []
        for seed in range(args.seeds):
            r = run_preset(name, seed, data[name], args.epochs)
            results[name].append(r)
            print(f"{name:9s} seed {seed}: test accuracy {r['test_accuracy']:.4f}, val {r['val_accuracy']:.4f}, "
                  f"{r['train_seconds']:.1f} s for {r['epochs']} epochs ({r['precision']}, {r['device']})", flush=True)
    ref_after = yardstick(args.yardstick)
    ref = (ref_before + ref_after) / 2
    print(f"yardstick after: {ref_after:.2f} s (mean {ref:.2f} s)\n")

    print(f"{'preset':9s} {'params':>8s} {'test accuracy':>20s} {'train s':>9s} {'ys':>6s}  goal")
    all_met = True
    for name, runs in results.items():
        accs = [r["test_accuracy"] for r in runs]
        secs = [r["train_seconds"] for r in runs]
        mean_acc, mean_s = statistics.mean(accs), statistics.mean(secs)
        spread = f"+-{statistics.stdev(accs):.4f}" if len(accs) > 1 else ""
        min_acc, max_ys, min_each = GOALS.get(name, (None, None, None))
        verdict = ""
        if min_acc is not None and args.epochs is None:
            met = (mean_acc >= min_acc and (max_ys is None or mean_s / ref <= max_ys)
                   and (min_each is None or min(accs) >= min_each))
            all_met &= met
            verdict = (f"{'met' if met else 'NOT met'} (>= {min_acc:.3f}"
                       + (f", each seed >= {min_each:.3f}" if min_each else "")
                       + (f" in <= {max_ys:g} yardsticks" if max_ys else "") + ")")
        print(f"{name:9s} {runs[0]['params']:>8,d} {mean_acc:>13.4f} {spread:>6s} {mean_s:>9.1f} {mean_s / ref:>6.1f}  {verdict}")
    if args.json:
        args.json.write_text(json.dumps({"yardstick_seconds": [ref_before, ref_after], "runs": results}, indent=2))
    return 0 if all_met else 1


if __name__ == "__main__":
    sys.exit(main())
