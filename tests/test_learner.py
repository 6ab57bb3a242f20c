"""fittingroom.Learner and the public API: fit, evaluate, predict, save on tiny data; the examples use public names."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import nbformat
import numpy as np
import pytest
import torch
from PIL import Image

import fittingroom
from fittingroom.cli import main

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TINY = {"validation_size": 40, "batch_size": 16}  # the tiny dataset's 240 training images: 200 train, 40 validate


@pytest.fixture
def learner(tiny_data) -> fittingroom.Learner:
    learner = fittingroom.Learner("mlp", tiny_data, epochs=2, **TINY)
    learner.fit(verbose=False)
    return learner


# ---------------------------------------------------------------------- the public surface
@pytest.mark.subprocess
def test_importing_fittingroom_does_not_import_torch():
    code = "import fittingroom, sys; assert 'torch' not in sys.modules and 'matplotlib' not in sys.modules"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


@pytest.mark.subprocess
def test_a_backend_chosen_before_fittingroom_is_kept_for_the_users_plots():
    # A notebook picks its inline backend first; switching it to Agg would stop its plt.show() showing anything.
    code = ("import matplotlib; matplotlib.use('svg'); import matplotlib.pyplot; import fittingroom; "
            "fittingroom.plot_learning_curves; assert matplotlib.get_backend() == 'svg', matplotlib.get_backend()")
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("name", [n for n in fittingroom.__all__ if n not in ("__version__", "PRESETS")])
def test_every_public_name_resolves_and_has_a_docstring_with_an_example(name):
    value = getattr(fittingroom, name)
    doc = value.__doc__ or ""
    assert "Example" in doc or ">>>" in doc, f"fittingroom.{name} needs a docstring with a short example"


def test_docs_api_describes_every_public_name():
    text = (EXAMPLES.parent / "docs" / "api.md").read_text()
    missing = [name for name in fittingroom.__all__ if name != "__version__" and f"`{name}" not in text]
    assert missing == []


def test_the_lazy_exports_are_the_supported_surface():
    assert set(fittingroom.__all__) - {"__version__"} == set(fittingroom._EXPORTS)
    assert set(fittingroom.__all__) <= set(dir(fittingroom))
    for name, module in fittingroom._EXPORTS.items():  # each name mapped to the module that defines it
        value = getattr(fittingroom, name)
        if callable(value):
            assert value.__module__ == f"fittingroom.{module}", name


# ---------------------------------------------------------------------- fit, evaluate, predict
def test_fit_evaluate_and_predict_on_tiny_data(learner):
    history = learner.history
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"}
    assert all(len(values) == 2 for values in history.values())
    assert history["loss"][1] < history["loss"][0]
    assert learner.evaluate()["accuracy"] > 0.9  # the tiny classes are bright squares in different quadrants
    assert set(learner.evaluate()) == {"accuracy", "loss"}
    x, y = learner.data.x_test[:20], learner.data.y_test[:20]
    probs = learner.predict_proba(x)
    assert probs.shape == (20, 4) and probs.dtype == np.float32 and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert (learner.predict(x) == probs.argmax(1)).all()
    # uint8 pixels and the tutorial's x / 255.0 are the same input; one image (H, W) is a batch of one
    assert np.allclose(learner.predict_proba(x / 255.0), probs, atol=1e-6)
    assert np.allclose(learner.predict_proba(x[0]), probs[:1], atol=1e-6)
    assert learner.evaluate(x, y)["accuracy"] == pytest.approx((probs.argmax(1) == y).mean())
    assert learner.classes == ["zero", "one", "two", "three"]


def test_the_learner_trains_as_fittingroom_train_does(tiny_data, tmp_path):
    config = fittingroom.TrainConfig.from_preset("seed").replace(data=str(tiny_data), epochs=2, **TINY)
    run = fittingroom.train_run(config, out=tmp_path / "run", verbose=False)
    history = fittingroom.Learner(config=config).fit(verbose=False)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert history[key] == run.history[key]


def test_a_second_fit_continues_where_the_first_stopped(tiny_data):
    at_once = fittingroom.Learner("mlp", tiny_data, **TINY)
    at_once.fit(epochs=3, verbose=False)
    in_steps = fittingroom.Learner("mlp", tiny_data, **TINY)
    in_steps.fit(epochs=1, verbose=False)
    history = in_steps.fit(epochs=2, verbose=False)
    assert history is in_steps.history and len(history["loss"]) == 3
    assert history["loss"] == at_once.history["loss"]  # optimizer state and shuffling carried on
    x = at_once.data.x_test
    assert np.array_equal(in_steps.predict_proba(x), at_once.predict_proba(x))


def test_fit_prints_keras_progress_and_counts_epochs_across_calls(learner, capsys):
    learner.fit(epochs=1)
    assert "Epoch 3/3 13/13" in capsys.readouterr().out


def test_callbacks_see_every_epoch_and_can_stop_training(tiny_data):
    class StopAfterTwo(fittingroom.Callback):
        def __init__(self):
            self.seen = []

        def on_epoch_end(self, epoch, logs):
            self.seen.append((epoch, sorted(logs)))
            if epoch == 1:
                self.trainer.stop_training = True

    stopper = StopAfterTwo()
    learner = fittingroom.Learner("mlp", tiny_data, **TINY)
    learner.fit(epochs=5, callbacks=[stopper], verbose=False)
    assert [epoch for epoch, _ in stopper.seen] == [0, 1] and len(learner.history["loss"]) == 2
    assert stopper.seen[0][1] == ["accuracy", "loss", "lr", "seconds", "val_accuracy", "val_loss"]
    learner.fit(epochs=1, verbose=False)  # a stop ends that fit, not the learner
    assert len(learner.history["loss"]) == 3


def test_a_learner_takes_split_data_a_preset_and_model_args(tiny_data):
    data = fittingroom.open_data(str(tiny_data), validation_size=40)
    learner = fittingroom.Learner("mlp", data, config="fast", model_args={"hidden": [32]}, epochs=1)
    assert learner.data is data and learner.config.optimizer == "adamw" and learner.config.epochs == 1
    assert "Total params: 25,252" in learner.summary()  # 784*32+32 + 32*4+4
    assert learner.summary().startswith('Model: "mlp"')
    cnn = fittingroom.Learner("cnn", data, config="resnet", epochs=1)  # resnet's model_args do not follow
    assert cnn.config.model == "cnn" and cnn.config.model_args == {}


def test_interpret_gives_the_numbers_and_pictures_of_fittingroom_evaluate(learner):
    mistakes = learner.interpret()
    assert set(mistakes.figures) == {"confusion.png", "highest_loss.png", "reliability.png", "explanations.png"}
    assert all(png.startswith(b"\x89PNG") for png in mistakes.figures.values())
    assert mistakes.result["overall"]["accuracy"] == pytest.approx(learner.evaluate()["accuracy"])


def test_learning_curves_are_a_figure_or_a_png(learner, tmp_path):
    before = plt.get_fignums()
    figure = learner.plot_learning_curves()
    assert type(figure).__name__ == "Figure" and figure.get_size_inches().tolist() == [12, 8]
    assert plt.get_fignums() == before  # outside pyplot: a notebook shows it once, as the cell's value
    path = fittingroom.plot_learning_curves(learner.history, tmp_path / "curves.png")
    assert path == tmp_path / "curves.png" and path.read_bytes().startswith(b"\x89PNG")
    assert learner.plot_learning_curves(tmp_path / "mine.png").read_bytes().startswith(b"\x89PNG")


# ---------------------------------------------------------------------- save
def test_save_then_load_model_gives_identical_probabilities(learner, tmp_path):
    folder = learner.save(tmp_path / "model")
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.safetensors"]
    info = json.loads((folder / "model.json").read_text())
    assert info["model"] == "mlp" and info["classes"] == learner.classes and info["unsure"]
    x = learner.data.x_test
    assert np.array_equal(fittingroom.load_model(folder).predict_proba(x), learner.predict_proba(x))
    records = fittingroom.Predictor(folder).predict_arrays(x[:5])
    assert [r["label"] for r in records] == learner.predict(x[:5]).tolist()
    learner.fit(epochs=1, verbose=False)
    learner.save(folder)  # a model saved there before is replaced
    assert np.array_equal(fittingroom.load_model(folder).predict_proba(x), learner.predict_proba(x))


def test_the_cli_predicts_with_a_saved_learner(learner, tmp_path, capsys):
    folder = learner.save(tmp_path / "model")
    photo = tmp_path / "photo.png"
    Image.fromarray(255 - learner.data.x_test[0]).resize((112, 112)).save(photo)  # dark on light, as photos are
    assert main(["predict", str(folder), str(photo), "--json"]) == 0
    [record] = json.loads(capsys.readouterr().out)  # a JSON array, one object per input
    assert record["class"] in learner.classes


def test_save_refuses_a_run_folder_and_a_torch_module(learner, tiny_data, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    with pytest.raises(fittingroom.FittingroomError, match="holds a training run"):
        learner.save(run)
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 4))
    custom = fittingroom.Learner(module, tiny_data, **TINY)
    custom.fit(epochs=1, verbose=False)
    assert custom.model is module and custom.evaluate()["accuracy"] > 0.25
    with pytest.raises(fittingroom.FittingroomError, match="register_model"):
        custom.save(tmp_path / "custom")
    assert not (tmp_path / "custom").exists()


def test_save_refuses_weights_that_are_not_numbers(learner, tmp_path):
    with torch.no_grad():
        learner.model[1].weight[0, 0] = float("nan")
    with pytest.raises(fittingroom.FittingroomError, match="NaN"):
        learner.save(tmp_path / "model")
    assert not (tmp_path / "model").exists()


# ---------------------------------------------------------------------- user mistakes
@pytest.mark.parametrize("kwargs, message", [
    ({"epoch": 3}, "unknown setting epoch; valid settings"),
    ({"model": 3}, "model must be a model name"),
    ({"model": "transformer"}, "unknown model 'transformer'"),
    ({"config": "fastest"}, "unknown preset 'fastest'"),
    ({"lr": -1.0}, "`lr` must be a positive number"),
    ({"teacher": "cnn"}, "teacher needs a run folder"),
    ({"save_best": "val_loss"}, "save_best needs a run folder"),
    ({"data": 3}, "data must be a dataset name, a path or a SplitData"),
])
def test_constructor_mistakes_are_one_line_errors(tiny_data, kwargs, message):
    kwargs = {"data": tiny_data, **TINY, **kwargs}
    with pytest.raises(fittingroom.FittingroomError, match=message) as info:
        fittingroom.Learner(**kwargs)
    assert "\n" not in str(info.value)


def test_split_data_with_data_settings_and_modules_that_do_not_fit_are_refused(tiny_data):
    data = fittingroom.open_data(str(tiny_data), validation_size=40)
    with pytest.raises(fittingroom.FittingroomError, match="validation_size says how to load"):
        fittingroom.Learner("mlp", data, validation_size=100)
    three = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 3))
    with pytest.raises(fittingroom.FittingroomError, match="4 classes"):
        fittingroom.Learner(three, data)
    with pytest.raises(fittingroom.FittingroomError, match="does not take the data's images"):
        fittingroom.Learner(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(100, 4)), data)
    with pytest.raises(fittingroom.FittingroomError, match="model_args are the arguments of a model built by name"):
        fittingroom.Learner(three, data, model_args={"hidden": [8]})


@pytest.mark.parametrize("call, message", [
    (lambda lr, x: lr.predict(x[:, :20]), r"expected images of shape \(N, 28, 28\)"),
    (lambda lr, x: lr.predict(x.astype(np.int64)), "uint8 pixels .* or floats in \\[0, 1\\]"),
    (lambda lr, x: lr.predict(x.astype(np.float32)), "float images must be in \\[0, 1\\]"),
    (lambda lr, x: lr.predict(np.full((1, 28, 28), np.nan)), "float images must be in \\[0, 1\\]"),
    (lambda lr, x: lr.evaluate(x), "pass both x and y"),
    (lambda lr, x: lr.evaluate(x, np.zeros(3, np.int64)), "one integer label per image"),
    (lambda lr, x: lr.evaluate(x, np.full(len(x), 7)), "class indices 0 to 3"),
    (lambda lr, x: lr.fit(epochs=0), "`epochs` must be a positive integer"),
    (lambda lr, x: lr.fit(epochs=1, callbacks=[print]), "fittingroom.Callback objects"),
])
def test_method_mistakes_are_one_line_errors(learner, call, message):
    with pytest.raises(fittingroom.FittingroomError, match=message) as info:
        call(learner, learner.data.x_test[:8])
    assert "\n" not in str(info.value)


def test_curves_before_fitting_and_an_empty_history_are_refused(tiny_data):
    with pytest.raises(fittingroom.FittingroomError, match="call fit"):
        fittingroom.Learner("mlp", tiny_data, **TINY).plot_learning_curves()
    with pytest.raises(fittingroom.FittingroomError, match="nothing to plot"):
        fittingroom.plot_learning_curves({})


# ---------------------------------------------------------------------- the examples use the public API only
def example_sources() -> dict[str, str]:
    """The Python of every example: the scripts, and the code cells of the notebooks (without IPython magics)."""
    sources = {p.name: p.read_text() for p in sorted(EXAMPLES.glob("*.py"))}
    for path in sorted(EXAMPLES.glob("*.ipynb")):
        cells = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
        code = "\n".join(cells)
        sources[path.name] = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in code.splitlines())
    return sources


def private_uses(source: str) -> list[str]:
    """What ``source`` takes from fittingroom beyond ``fittingroom`` and the names in ``fittingroom.__all__``."""
    public, aliases, found = set(fittingroom.__all__), set(), []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "fittingroom":
                    aliases.add(alias.asname or "fittingroom")
                elif alias.name.startswith("fittingroom."):
                    found.append(f"import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "fittingroom":
            if node.module != "fittingroom":
                found.append(f"from {node.module} import ...")
            else:
                found += [f"from fittingroom import {a.name}" for a in node.names if a.name not in public]
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            if node.attr not in public:
                found.append(f"fittingroom.{node.attr}")
    return found


def test_the_check_finds_private_names():
    assert private_uses("from fittingroom.training.loop import Trainer") == ["from fittingroom.training.loop import ..."]
    assert private_uses("import fittingroom.inference.forward") == ["import fittingroom.inference.forward"]
    assert private_uses("import fittingroom as fr\nfr.training") == ["fittingroom.training"]
    assert private_uses("from fittingroom import _EXPORTS") == ["from fittingroom import _EXPORTS"]
    assert private_uses("import fittingroom\nfittingroom.Learner('mlp').fit()") == []


@pytest.mark.parametrize("name", ["tutorial.py", "tutorial.ipynb"])
def test_the_examples_use_public_names_only(name):
    sources = example_sources()
    assert name in sources
    assert private_uses(sources[name]) == []
