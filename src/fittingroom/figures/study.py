"""The picture of a hyperparameter study: optimisation history and parameter importances.

Importances come from PED-ANOVA (Optuna's ``PedAnovaImportanceEvaluator``): it
needs nothing beyond Optuna and NumPy, where fANOVA and mean decrease in
impurity need scikit-learn and a random forest. It asks which parameters
matter to land in the best quarter of the trials (``target_quantile=0.25``:
with 20 trials that is 5 of them, the minimum its authors advise).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from ..core.files import write_bytes
from .curves import figure_png, plt

MIN_TRIALS = 4  # complete trials with varied parameters before importances mean anything


def param_importances(study) -> dict[str, float] | None:
    """Normalised importance per parameter (largest first), or None with too few complete trials."""
    import optuna
    from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < MIN_TRIALS or len({t.value for t in complete}) < 2:
        return None  # too few trials, or all equally good: nothing tells the parameters apart
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PED-ANOVA warns when few trials pass the quantile; we say so above
        importances = get_param_importances(study, evaluator=PedAnovaImportanceEvaluator(target_quantile=0.25))
    return {name: float(value) for name, value in importances.items()}


def study_figure(study, importances: dict[str, float] | None, title: str = ""):
    """Two panels: the objective per trial with the best so far, and the importances as bars."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5), gridspec_kw={"width_ratios": [3, 2]})
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    pruned = [t for t in study.trials if t.state.name == "PRUNED" and t.intermediate_values]
    left.scatter([t.number for t in complete], [t.value for t in complete], color="tab:blue", label="complete", zorder=3)
    left.scatter([t.number for t in pruned], [t.intermediate_values[t.last_step] for t in pruned], marker="x",
                 color="tab:gray", label="pruned (last reported)", zorder=3)
    best, xs, ys = None, [], []
    for t in sorted(complete, key=lambda t: t.number):
        best = t.value if best is None else max(best, t.value)
        xs.append(t.number)
        ys.append(best)
    left.step(xs, ys, where="post", color="tab:red", label="best so far")
    base = next((t for t in complete if t.user_attrs.get("baseline")), None)
    if base is not None:
        left.axhline(base.value, color="tab:green", linestyle="--", label=f"base configuration (trial {base.number})")
    left.set_xlabel("trial")
    left.set_ylabel("validation accuracy")
    left.set_title("Optimisation history")
    left.grid(True, alpha=0.3)
    left.legend(loc="best")
    if importances:
        names = list(importances)[::-1]  # largest at the top
        right.barh(names, [importances[n] for n in names], color="tab:blue")
        right.set_xlabel("importance (PED-ANOVA, top 25% of trials)")
    else:
        right.text(0.5, 0.5, f"parameter importances need at least {MIN_TRIALS}\ncomplete trials with different results",
                   ha="center", va="center", transform=right.transAxes)
        right.set_xticks([])
        right.set_yticks([])
    right.set_title("Parameter importances")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_study_picture(path: str | os.PathLike, study, importances: dict[str, float] | None, title: str = "") -> Path:
    return write_bytes(path, figure_png(study_figure(study, importances, title)))
