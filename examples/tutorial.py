"""The Keras tutorial "Neural networks using Python", step by step with fittingroom's Python API.

    python examples/tutorial.py                                  # the tutorial: 30 epochs
    FITTINGROOM_TUTORIAL_EPOCHS=1 python examples/tutorial.py     # a quick run

The same steps, with the pictures inline, are in ``examples/tutorial.ipynb``.
``fittingroom train --preset seed`` does all of this in one command.
"""

import os
from pathlib import Path

import numpy as np

import fittingroom
from fittingroom.core.device import resolve_device
from fittingroom.figures.curves import save_learning_curves
from fittingroom.inference.forward import evaluate, predict_proba
from fittingroom.training.callbacks import ProgressLogger
from fittingroom.training.loop import Trainer, seed_everything
from fittingroom.training.run import model_info

DATA = os.environ.get("FITTINGROOM_TUTORIAL_DATA", "fashion-mnist")  # a dataset name or a folder of IDX files
EPOCHS = int(os.environ.get("FITTINGROOM_TUTORIAL_EPOCHS", "30"))  # the tutorial trains for 30 epochs
OUT = Path(os.environ.get("FITTINGROOM_TUTORIAL_OUT", "runs/tutorial"))  # where the model and the curves go


def main() -> None:
    # 1-2. Load the data and split it: the first 5,000 training images validate, as `x_train[:5000]` does.
    # Pixels stay uint8 (N, 28, 28); the model scales each batch to [0, 1], the tutorial's `/ 255.0`.
    data = fittingroom.open_data(DATA, validation_size=5000)
    print(f"train {data.x_train.shape}, validation {data.x_val.shape}, test {data.x_test.shape}, {data.x_train.dtype}")

    # 3. The class names.
    classes = data.classes
    print(classes)

    # 4. The model: Flatten -> Dense(300, relu) -> Dense(100, relu) -> Dense(10, softmax).
    # It returns logits; the softmax is in the loss and in predict_proba.
    config = fittingroom.TrainConfig.from_preset("seed").replace(data=DATA, epochs=EPOCHS)
    seed_everything(config.seed)
    model = fittingroom.create_model("mlp", hidden=(300, 100), input_shape=data.input_shape, num_classes=len(classes))

    # 5. The summary, in Keras's format.
    print(fittingroom.model_summary(model, data.input_shape))

    # 6. Compile and fit: sparse categorical cross-entropy, SGD with learning rate 0.01, batches of 32,
    # validating after every epoch (the "seed" preset).
    trainer = Trainer(model, data, config, resolve_device(config.device), callbacks=[ProgressLogger()])
    history = trainer.fit()  # {"loss": [...], "accuracy": [...], "val_loss": [...], "val_accuracy": [...], ...}

    # 7. The learning curves: 12x8 inches, grid, y from 0 to 1.
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"Learning curves: {save_learning_curves(OUT / 'learning_curves.png', history)}")

    # 8. Evaluate on the test set.
    result = evaluate(model, data.x_test, data.y_test)
    print(f"Test accuracy: {result['accuracy']:.4f} - test loss: {result['loss']:.4f}")

    # 9. Predict the classes of the first 3 test images.
    y_pred = predict_proba(model, data.x_test[:3]).argmax(axis=1)
    print(y_pred)
    print(np.array(classes)[y_pred])

    # Save the model; `fittingroom predict runs/tutorial photo.png` and `fittingroom.load_model` use it.
    fittingroom.save_model(OUT, model, model_info(config, data, model))
    print(f"Model saved in {OUT}")


if __name__ == "__main__":
    main()
