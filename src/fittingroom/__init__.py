"""fittingroom: train, evaluate, explain and serve classifiers for small images.

The tutorial in five lines::

    import fittingroom
    (x_train, y_train), (x_test, y_test) = fittingroom.load_dataset("fashion-mnist")
    run = fittingroom.train_run(fittingroom.TrainConfig.from_preset("seed"))
    model = fittingroom.load_model(run.path)
    model.predict(x_test[:3] / 255.0)   # array([9, 2, 1])
"""

__version__ = "0.1.0"

from .artifacts import Classifier, load_model, save_model  # noqa: E402
from .config import PRESETS, TrainConfig  # noqa: E402
from .data import list_datasets, load_dataset, open_data, read_idx, write_idx  # noqa: E402
from .errors import FittingroomError  # noqa: E402
from .export import export_onnx  # noqa: E402
from .models import count_params, create_model, list_models, register_model  # noqa: E402
from .pipeline import RunResult, train_run  # noqa: E402
from .predict import Predictor  # noqa: E402
from .summary import model_summary  # noqa: E402

__all__ = [
    "Classifier", "FittingroomError", "PRESETS", "Predictor", "RunResult", "TrainConfig", "__version__", "count_params",
    "create_model", "export_onnx", "list_datasets", "list_models", "load_dataset", "load_model", "model_summary",
    "open_data", "read_idx", "register_model", "save_model", "train_run", "write_idx",
]
