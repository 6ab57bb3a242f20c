"""The Keras tutorial "Neural networks using Python", step by step with fittingroom's Python API.

    python examples/tutorial.py                                  # the tutorial: 30 epochs
    FITTINGROOM_TUTORIAL_EPOCHS=1 python examples/tutorial.py     # a quick run

The same steps, with the pictures inline, are in ``examples/tutorial.ipynb``; docs/api.md describes
every name used here. ``fittingroom train --preset seed`` does all of this in one command.
"""

import os
from pathlib import Path

import numpy as np

import fittingroom

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

    # 4. The model: Flatten -> Dense(300, relu) -> Dense(100, relu) -> Dense(10, softmax), sized for the data.
    # It returns logits; the softmax is in the loss and in predict_proba. The "seed" preset is the tutorial's
    # compile step: sparse categorical cross-entropy, SGD with learning rate 0.01, batches of 32.
    learner = fittingroom.Learner("mlp", data, config="seed", epochs=EPOCHS, model_args={"hidden": [300, 100]})

    # 5. The summary, in Keras's format.
    print(learner.summary())

    # 6. Fit, validating after every epoch.
    history = learner.fit()  # {"loss": [...], "accuracy": [...], "val_loss": [...], "val_accuracy": [...], ...}

    # 7. The learning curves: 12x8 inches, grid, y from 0 to 1.
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"Learning curves: {fittingroom.plot_learning_curves(history, OUT / 'learning_curves.png')}")

    # 8. Evaluate on the test set.
    result = learner.evaluate()
    print(f"Test accuracy: {result['accuracy']:.4f} - test loss: {result['loss']:.4f}")

    # 9. Predict the classes of the first 3 test images (uint8 pixels, or floats as x_test[:3] / 255.0).
    y_pred = learner.predict(data.x_test[:3])
    print(y_pred)
    print(np.array(classes)[y_pred])

    # Save the model; `fittingroom predict runs/tutorial photo.png` and `fittingroom.load_model` use it.
    learner.save(OUT)
    print(f"Model saved in {OUT}")


if __name__ == "__main__":
    main()
