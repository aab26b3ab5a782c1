"""Export: the .keras copy and the TensorFlow SavedModel give the trained model's outputs."""

import json

import numpy as np
import pytest

from tests.pipelines.test_train import trained_run


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    return trained_run(tmp_path_factory.getbasetemp())


@pytest.mark.slow
def test_saved_model_and_keras_export_reproduce_the_trained_model(run_dir, tmp_path):
    import keras
    import tensorflow as tf

    import model.assemblenet  # noqa: F401  (custom layers)
    from model.structure import Structure
    from pipelines import cli
    from preprocessing.dataset import make_dataset

    assert cli.main(["export", str(run_dir), "--out", str(tmp_path / "export")]) == 0
    out = tmp_path / "export"
    config = json.loads((run_dir / "config.json").read_text())
    structure = Structure.from_json(run_dir / "structure.json")
    test_files = str(run_dir.parent / "synthetic_charades" / "records" / "test" / "*.tfrecord")
    inputs, _ = next(iter(make_dataset(test_files, modalities=structure.modalities, frames=config["frames"],
                                       size=config["size"], training=False, batch_size=4,
                                       num_classes=config["num_classes"])))
    trained = keras.models.load_model(run_dir / "model.keras")
    expected = keras.ops.convert_to_numpy(trained(inputs, training=False))
    assert np.ptp(expected) > 0  # the videos get different scores: a meaningful comparison

    exported = keras.models.load_model(out / "model.keras")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(exported(inputs, training=False)), expected,
                               rtol=1e-5, atol=1e-5)
    assert getattr(exported, "optimizer", None) is None  # serving copy without training state

    served = tf.saved_model.load(str(out / "saved_model"))
    np.testing.assert_allclose(served.serve(inputs).numpy(), expected, rtol=1e-5, atol=1e-5)
    signature = served.signatures["serving_default"]
    outputs = signature(**{k: tf.convert_to_tensor(v) for k, v in inputs.items()})
    np.testing.assert_allclose(next(iter(outputs.values())).numpy(), expected, rtol=1e-5, atol=1e-5)

    described = json.loads((out / "export.json").read_text())
    assert set(described["inputs"]) == set(structure.modalities)
    assert described["inputs"]["object"]["dtype"] == "int32"
    assert described["output"]["shape"] == [None, config["num_classes"]]
    assert (out / "classes.json").read_text() == (run_dir / "classes.json").read_text()
