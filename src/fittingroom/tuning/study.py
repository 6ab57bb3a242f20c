"""Hyperparameter search with Optuna: TPE sampling, median pruning on the validation curve.

A study is a folder (default ``runs/tune-<preset>``)::

    study.db           the Optuna study (SQLite): run the same command again to continue it;
                       several processes may work on one study at the same time
    study.json         the base configuration and the search space (a rerun must match them)
    trials/0000/       one ordinary run folder per trial, plus trial.json (state, parameters, value)
    best_config.json   the best trial's whole configuration: ``fittingroom train --config best_config.json``
    summary.json       counts, the best trial, the preset's own result, the winner's test figures
    study.png          optimisation history and parameter importances

Trials never see the test set (their data has none, and they skip test
evaluation): they are compared on validation accuracy. The best trial's model
is evaluated on the test set once, at the end. The first trial of a new study
is the base configuration itself, so the search reports how far it got beyond it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config.train_config import TrainConfig
from ..core.console import printer
from ..core.errors import ConfigError, RunError
from ..core.files import write_json
from ..inference.forward import evaluate
from ..inference.saved import load_model
from ..runfolder.data import load_data
from ..runfolder.files import read_json
from ..runfolder.paths import RunPaths, StudyPaths
from ..training.callbacks import Callback, NonFiniteLoss
from ..training.loop import TrainingInterrupted
from ..training.run import train_run
from .space import Param, apply_params, base_value, resolve_space, space_to_dict

STUDY_NAME = "fittingroom"
OBJECTIVE = "val_accuracy"  # maximised
# Settings that may differ between the processes or reruns of one study: they do not change the results.
HEARTBEAT_S = 60  # seconds between a running trial's signs of life in the storage
RUNTIME_FIELDS = ("threads", "device", "tensorboard", "mlflow", "eval_batch_size", "workers", "memory_limit_mb")


@dataclass
class TuneResult:
    path: Path
    best_config: TrainConfig
    summary: dict[str, Any]


class OptunaPruning(Callback):
    """Reports ``val_accuracy`` to the trial after every epoch and stops the run when the pruner says so."""

    name = "optuna_pruning"

    def __init__(self, trial):
        self.trial = trial
        self.last: tuple[int, float] | None = None  # (epochs done, val_accuracy)

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        import optuna

        self.last = (epoch + 1, logs[OBJECTIVE])
        self.trial.report(logs[OBJECTIVE], step=epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch + 1}: {OBJECTIVE} {logs[OBJECTIVE]:.4f} below the median")


def _import_optuna():
    try:
        import optuna
    except ImportError:
        raise ConfigError("`fittingroom tune` needs Optuna, which is not installed; install it with "
                          "`pip install 'fittingroom[tune]'`") from None
    return optuna


def storage_url(storage: str | os.PathLike | None, paths: StudyPaths) -> str:
    """A database URL: ``storage`` as given if it is one, else a SQLite file (default ``STUDY/study.db``)."""
    if storage is not None and "://" in str(storage):
        return str(storage)
    return "sqlite:///" + str(Path(storage or paths.db).resolve())


def _check_identity(paths: StudyPaths, config: TrainConfig, space: dict[str, Param]) -> dict[str, Any] | None:
    """For an existing study, insist on the same configuration and space; for a new one, return study.json's content."""
    base = {k: v for k, v in config.to_dict().items() if k not in RUNTIME_FIELDS}
    identity = {"base_config": base, "space": space_to_dict(space)}
    if paths.study_json.is_file():
        saved = read_json(paths.study_json, advice="the study folder is damaged; choose another --out")
        defaults = TrainConfig().to_dict()  # a setting newer than the study had its default value there
        changed = sorted({k for k in base if saved["base_config"].get(k, defaults[k]) != base[k]}
                         | ({"search space"} if saved["space"] != identity["space"] else set()))
        if changed:
            raise ConfigError(f"{paths.root} holds a study with other settings ({', '.join(changed)} differ); "
                              f"pass the same settings to continue it, or choose another --out")
        return None
    return identity


def _open_storage(optuna, url: str, storage: str | os.PathLike | None):
    """Optuna's database storage at ``url``; a URL or file that is no usable database is a ConfigError."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        # Heartbeats: a trial whose process died (killed, crashed) is marked failed when the next trial starts.
        return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=3 * HEARTBEAT_S,
                                          engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None)
    except (SQLAlchemyError, ImportError, ValueError, RuntimeError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"--storage {storage}: not a usable study database ({reason}); pass a new or existing "
                          f"SQLite file, or a database URL such as sqlite:///study.db") from None


def _mark(folder: Path, number: int, state: str, params: dict, value: float | None, epochs: int | None,
          baseline: bool, message: str = "") -> None:
    """trial.json: what became of this trial's run folder (a pruned or failed run is not a finished run)."""
    if folder.is_dir():
        write_json(RunPaths(folder).trial, {"trial": number, "state": state, OBJECTIVE: value, "epochs": epochs,
                                           "baseline": baseline, "params": params, "message": message})


def tune(
    config: TrainConfig,
    out: str | os.PathLike | None = None,
    space: dict[str, Param] | str | None = None,
    trials: int = 20,
    timeout: float | None = None,
    storage: str | os.PathLike | None = None,
    verbose: bool = True,
    callbacks: list[Callback] | None = None,
    prune_startup: int = 5,
    prune_warmup: int = 1,
) -> TuneResult:
    """Search hyperparameters around ``config`` until the study holds ``trials`` finished trials.

    Args:
        config: the base configuration (its data, model and every setting the space leaves alone).
        out: the study folder (default ``runs/tune-<preset>``); an existing study there is continued.
        space: a search space, a space file, a preset name, or None for the named space of ``config``.
        trials: the number of complete plus pruned trials the study should hold when this returns.
        timeout: stop starting new trials after this many seconds.
        storage: a SQLite file or a database URL (default ``STUDY/study.db``).
        verbose: print one line per trial and the result.
        callbacks: more callbacks for every trial's training loop.
        prune_startup, prune_warmup: the median pruner prunes nothing during the first
            ``prune_startup`` trials, nor in the first ``prune_warmup`` epochs of any trial.
    """
    optuna = _import_optuna()
    if not isinstance(trials, int) or trials < 1:
        raise ConfigError(f"--trials must be a positive integer; received {trials!r}")
    if timeout is not None and not timeout > 0:
        raise ConfigError(f"--timeout must be a positive number of seconds; received {timeout!r}")
    config = config.validate()
    space = space if isinstance(space, dict) else resolve_space(space, config)
    paths = StudyPaths(out or Path("runs") / f"tune-{config.preset}")
    new_identity = _check_identity(paths, config, space)
    say = printer(verbose)

    url = storage_url(storage, paths)
    created = not paths.root.exists()
    paths.root.mkdir(parents=True, exist_ok=True)  # the default storage is a file in it
    with _quietly(optuna):
        try:
            rdb = _open_storage(optuna, url, storage or paths.db)
        except ConfigError:
            if created:  # a study that never started leaves no folder behind
                shutil.rmtree(paths.root, ignore_errors=True)
            raise
        if new_identity is not None:
            write_json(paths.study_json, new_identity)
        study = optuna.create_study(
            storage=rdb, study_name=STUDY_NAME, direction="maximize", load_if_exists=True,
            # multivariate TPE models parameters jointly (lr and batch size interact); the constant liar keeps
            # processes sharing the study from sampling the same point; seeded from how far the study is.
            sampler=optuna.samplers.TPESampler(n_startup_trials=max(3, trials // 4), multivariate=True,
                                               constant_liar=True, seed=(config.seed + _count(rdb, "ALL")) % 2**32),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=prune_startup, n_warmup_steps=prune_warmup),
        )
    if not study.trials:  # the base configuration is trial 0: the result to beat
        baseline = {n: base_value(config, n) for n, p in space.items() if p.contains(base_value(config, n))}
        study.enqueue_trial(baseline, user_attrs={"baseline": True}, skip_if_exists=True)

    data = load_data(config)
    no_images = np.zeros((0, *data.image_shape), dtype=np.uint8)
    blind = dataclasses.replace(data, x_test=no_images, y_test=data.y_test[:0])  # the trials get no test set

    def objective(trial) -> float:
        params = {name: p.suggest(trial) for name, p in space.items()}
        folder, is_base = paths.trial(trial.number), bool(trial.user_attrs.get("baseline"))
        pruning = OptunaPruning(trial)
        try:
            result = train_run(apply_params(config, params), out=folder, verbose=False, data=blind,
                               extra_callbacks=[pruning, *(callbacks or [])], evaluate_test=False)
        except optuna.TrialPruned as exc:
            RunPaths(folder).checkpoint.unlink(missing_ok=True)  # nothing to resume: the search stopped it
            epochs, value = pruning.last or (None, None)
            _mark(folder, trial.number, "pruned", params, value, epochs, is_base, str(exc))
            raise
        except (TrainingInterrupted, KeyboardInterrupt):
            _mark(folder, trial.number, "interrupted", params, None, None, is_base)
            raise TrainingInterrupted(f"interrupted in trial {trial.number}; {_count(rdb, 'DONE')} finished trials are "
                                      f"saved in {paths.root}; run the same command again to continue") from None
        except BaseException as exc:
            trial.set_user_attr("error", str(exc))
            _mark(folder, trial.number, "failed", params, None, None, is_base, str(exc))
            raise
        value = result.metrics[OBJECTIVE]
        _mark(folder, trial.number, "complete", params, value, result.metrics["epochs"], is_base)
        trial.set_user_attr("epochs", result.metrics["epochs"])
        trial.set_user_attr("seconds", result.metrics["train_seconds"])
        return value

    started, failures = time.perf_counter(), []

    def progress(study, frozen) -> None:
        done = _count(rdb, "DONE")
        if frozen.state.name == "FAIL":
            failures.append(frozen.number)
        say(_trial_line(study, frozen, done, trials))
        if done >= trials or len(failures) >= max(3, trials):  # enough trials; or every trial fails
            study.stop()

    if _count(rdb, "DONE") < trials:
        with _quietly(optuna):
            study.optimize(objective, timeout=timeout, callbacks=[progress], catch=(NonFiniteLoss, ConfigError))
    summary = finish_study(study, paths, config, data, url, time.perf_counter() - started)
    _say_result(say, summary, paths)
    return TuneResult(paths.root, TrainConfig.load(paths.best_config), summary)


@contextlib.contextmanager
def _quietly(optuna):
    """Optuna without its log lines (``tune`` prints one line per trial) and experimental-feature warnings."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def _count(rdb, which: str) -> int:
    """Trials of the study in storage: ``DONE`` (complete or pruned) or ``ALL``; 0 for a study not yet created."""
    try:
        study_id = rdb.get_study_id_from_name(STUDY_NAME)
    except KeyError:
        return 0
    trials = rdb.get_all_trials(study_id, deepcopy=False)
    return len(trials) if which == "ALL" else sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials)


def _trial_line(study, t, done: int, total: int) -> str:
    head = f"Trial {t.number} ({done}/{total})"
    if t.state.name == "COMPLETE":
        best = study.best_trial
        return (f"{head}: {OBJECTIVE} {t.value:.4f} in {t.user_attrs.get('epochs')} epochs, "
                f"{t.user_attrs.get('seconds', 0):.0f}s" + (" - new best" if best.number == t.number else
                                                            f" - best {best.value:.4f} (trial {best.number})"))
    if t.state.name == "PRUNED":
        step = t.last_step
        return f"{head}: pruned after epoch {step + 1} ({OBJECTIVE} {t.intermediate_values[step]:.4f})"
    return f"{head}: failed: {t.user_attrs.get('error', 'see the trial folder')}"


def finish_study(study, paths: StudyPaths, config: TrainConfig, data, url: str, seconds: float) -> dict[str, Any]:
    """Write best_config.json, evaluate the winner on the test set (once per winner), study.png, summary.json."""
    from ..figures.study import param_importances, save_study_picture

    states = [t.state.name for t in study.trials]
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if not complete:
        raise RunError(f"{paths.root}: no trial completed ({states.count('PRUNED')} pruned, "
                       f"{states.count('FAIL')} failed); look at trials/*/trial.json, widen the space or add --trials")
    for t in study.trials:  # trials whose process died before it could say so
        if t.state.name == "FAIL" and not RunPaths(paths.trial(t.number)).trial.exists():
            _mark(paths.trial(t.number), t.number, "failed", t.params, None, None, bool(t.user_attrs.get("baseline")),
                  "its process stopped (killed or crashed) during training")
    best = study.best_trial
    best_folder = paths.trial(best.number)
    write_json(paths.best_config, read_json(RunPaths(best_folder).config))
    previous = (read_json(paths.summary, advice="delete it and run the same command again to rewrite it")
                if paths.summary.is_file() else {})
    test = previous.get("test") if previous.get("best", {}).get("trial") == best.number else None
    if not test:  # the one look at the test set, for this winner
        result = evaluate(load_model(best_folder).module, data.x_test, data.y_test, tta=config.tta)
        test = {"trial": best.number, "test_accuracy": result["accuracy"], "test_loss": result["loss"]}
    base = next((t for t in study.trials if t.user_attrs.get("baseline")), None)
    importances = param_importances(study)
    summary = {
        "study": str(paths.root), "storage": url, "objective": OBJECTIVE, "direction": "maximize",
        "trials": {"complete": len(complete), "pruned": states.count("PRUNED"), "failed": states.count("FAIL"),
                   "running": states.count("RUNNING")},
        "best": {"trial": best.number, OBJECTIVE: best.value, "run": str(best_folder), "params": best.params},
        "baseline": None if base is None else {"trial": base.number, "state": base.state.name.lower(),
                                               OBJECTIVE: base.value, "params": base.params},
        "test": test,
        "importances": importances,
        "best_config": str(paths.best_config),
        "seconds": seconds,
    }
    save_study_picture(paths.picture, study, importances, title=f"{config.model} on {config.data} ({config.preset})")
    write_json(paths.summary, summary)
    return summary


def _say_result(say, summary: dict[str, Any], paths: StudyPaths) -> None:
    best, base, test, counts = summary["best"], summary["baseline"], summary["test"], summary["trials"]
    say(f"{counts['complete']} complete, {counts['pruned']} pruned, {counts['failed']} failed trials in {paths.root}")
    base_text = f" (base configuration: {base[OBJECTIVE]:.4f})" if base and base[OBJECTIVE] is not None else ""
    say(f"Best: trial {best['trial']}, {OBJECTIVE} {best[OBJECTIVE]:.4f}{base_text}")
    say("  " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items()))
    say(f"Test accuracy of the best trial: {test['test_accuracy']:.4f} - test loss: {test['test_loss']:.4f}")
    say(f"Train it again with: fittingroom train --config {paths.best_config}")
