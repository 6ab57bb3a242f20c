"""The tutorial's own Keras code against fittingroom's seed preset, same epochs, same machine, one invocation.

    python benchmarks/keras_vs_fittingroom.py            # 30 epochs each (about 6 minutes on 2 cores)
    python benchmarks/keras_vs_fittingroom.py --epochs 3 # a quick look

TensorFlow is installed into its own virtual environment (``.venv-keras``, CPU
build, pinned) on first use, so it never touches fittingroom's environment.
Keras gets the same arrays fittingroom loads (the tutorial's ``load_data()``
would download them). Both train the tutorial's MLP with SGD(0.01), batch 32,
validation after every epoch; the time compared is the wall time of the
training loop including per-epoch validation (Keras's ``fit``, fittingroom's
``train_seconds``). The yardstick (``../shared/yardstick.py``) runs before and
after, so each time is also given in yardsticks. The report ends with the speed
ratio (the goal: at least 8x) and both test accuracies.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from timing import YARDSTICK, yardstick

ROOT = Path(__file__).resolve().parent.parent
TF_VERSION = "2.21.0"
GOAL = 8.0  # fittingroom's seed preset at least this many times faster than the tutorial's Keras code

# The tutorial's code, verbatim except where its data comes from and the epoch count.
KERAS_SCRIPT = r'''
import json, sys, time
import numpy as np
from tensorflow import keras

npz, epochs, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
arrays = np.load(npz)
x_train, y_train, x_test, y_test = arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"]
x_valid, x_train = x_train[:5000]/255.0, x_train[5000:]/255.0
y_valid, y_train = y_train[:5000], y_train[5000:]
model = keras.models.Sequential([
    keras.layers.Flatten(input_shape=[28, 28]),
    keras.layers.Dense(300, activation="relu"),
    keras.layers.Dense(100, activation="relu"),
    keras.layers.Dense(10, activation="softmax")
])
model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd", metrics=["accuracy"])
start = time.perf_counter()
history = model.fit(x_train, y_train, epochs=epochs, validation_data=(x_valid, y_valid), verbose=2)
fit_seconds = time.perf_counter() - start
test_loss, test_accuracy = model.evaluate(x_test / 255.0, y_test, verbose=0)
json.dump({"fit_seconds": fit_seconds, "test_accuracy": float(test_accuracy), "test_loss": float(test_loss),
           "val_accuracy": float(history.history["val_accuracy"][-1]), "keras": keras.__version__}, open(out, "w"))
'''


def keras_python(venv: Path) -> Path:
    """The venv's python, creating the venv and installing TensorFlow (CPU) on first use."""
    python = venv / "bin" / "python"
    if not (venv / ".installed").exists():
        print(f"Installing tensorflow-cpu=={TF_VERSION} into {venv} (first run only)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"tensorflow-cpu=={TF_VERSION}"], check=True)
        (venv / ".installed").touch()
    return python


def run_keras(epochs: int, data_dir: str | None, venv: Path) -> dict:
    import fittingroom

    python = keras_python(venv)
    (x_train, y_train), (x_test, y_test) = fittingroom.load_dataset("fashion-mnist", data_dir=data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        npz, script, out = Path(tmp) / "data.npz", Path(tmp) / "tutorial.py", Path(tmp) / "result.json"
        np.savez(npz, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
        script.write_text(KERAS_SCRIPT)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        subprocess.run([str(python), str(script), str(npz), str(epochs), str(out)], check=True, env=env)
        return json.loads(out.read_text())


def run_fittingroom(epochs: int, data_dir: str | None, preset: str) -> dict:
    import fittingroom

    config = fittingroom.TrainConfig.from_preset(preset).replace(epochs=epochs, data_dir=data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        result = fittingroom.train_run(config, out=Path(tmp) / "run", verbose=True)
    return result.metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--preset", default="seed", help="fittingroom preset to compare (default: seed, same math)")
    parser.add_argument("--data-dir", help="where Fashion-MNIST is (default: the usual places)")
    parser.add_argument("--venv", type=Path, default=ROOT / ".venv-keras", help="TensorFlow's own environment")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--yardstick", type=Path, default=YARDSTICK, help=f"the yardstick script ({YARDSTICK})")
    args = parser.parse_args()

    before = yardstick(args.yardstick)
    print(f"yardstick before: {before:.2f} s", flush=True)
    print(f"== Keras (tensorflow-cpu {TF_VERSION}), the tutorial's code, {args.epochs} epochs", flush=True)
    keras = run_keras(args.epochs, args.data_dir, args.venv)
    print(f"== fittingroom, preset {args.preset}, {args.epochs} epochs", flush=True)
    ours = run_fittingroom(args.epochs, args.data_dir, args.preset)
    after = yardstick(args.yardstick)
    ref = (before + after) / 2
    ratio = keras["fit_seconds"] / ours["train_seconds"]
    print(f"yardstick after: {after:.2f} s (mean {ref:.2f} s)")
    print()
    print(f"{'':14s} {'train s':>9s} {'ys':>7s} {'s/epoch':>8s} {'test acc':>9s}")
    print(f"{'keras ' + keras['keras']:14s} {keras['fit_seconds']:9.1f} {keras['fit_seconds'] / ref:7.1f} "
          f"{keras['fit_seconds'] / args.epochs:8.2f} {keras['test_accuracy']:9.4f}")
    print(f"{'fittingroom':14s} {ours['train_seconds']:9.1f} {ours['train_seconds'] / ref:7.1f} "
          f"{ours['seconds_per_epoch']:8.2f} {ours['test_accuracy']:9.4f}")
    print(f"speed-up: {ratio:.1f}x ({ours['device']}, {os.cpu_count()} CPUs); goal >= {GOAL:g}x: "
          f"{'met' if ratio >= GOAL else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps({"epochs": args.epochs, "keras": keras, "fittingroom": ours, "speedup": ratio,
                                         "yardstick_seconds": [before, after]}, indent=2))


if __name__ == "__main__":
    main()
