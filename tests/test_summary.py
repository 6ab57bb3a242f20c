from fittingroom import create_model, model_summary
from fittingroom.models.summary import snake_case

# The table the tutorial prints for its model (Keras 2), with our model name.
TUTORIAL_SUMMARY = """\
Model: "mlp"
_________________________________________________________________
Layer (type)                 Output Shape              Param #
=================================================================
flatten (Flatten)            (None, 784)               0
_________________________________________________________________
dense (Dense)                (None, 300)               235500
_________________________________________________________________
dense_1 (Dense)              (None, 100)               30100
_________________________________________________________________
dense_2 (Dense)              (None, 10)                1010
=================================================================
Total params: 266,610
Trainable params: 266,610
Non-trainable params: 0
_________________________________________________________________"""


def test_tutorial_mlp_summary_matches_keras_exactly():
    assert model_summary(create_model("mlp"), (28, 28), name="mlp") == TUTORIAL_SUMMARY


def test_frozen_parameters_are_counted_as_non_trainable():
    model = create_model("mlp")
    for p in model[1].parameters():
        p.requires_grad = False
    text = model_summary(model, (28, 28))
    assert "Trainable params: 31,110" in text and "Non-trainable params: 235,500" in text


def test_cnn_summary_names_layers_like_keras_and_counts_batchnorm():
    text = model_summary(create_model("cnn", widths=[8], convs=[2]), (28, 28))
    assert "conv2d (Conv2D)" in text and "conv2d_1 (Conv2D)" in text
    assert "batch_normalization (BatchNormalization)" in text and "reshape (Reshape)" in text
    assert "max_pooling2d (MaxPooling2D)" in text
    assert "(None, 8, 14, 14)" in text
    assert "relu" not in text.lower()


def test_snake_case_follows_keras():
    assert snake_case("BatchNormalization") == "batch_normalization"
    assert snake_case("Conv2D") == "conv2d"
    assert snake_case("GlobalAveragePooling2D") == "global_average_pooling2d"
