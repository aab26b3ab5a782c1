import os

# Model tests run under both backends: `make test` sets KERAS_BACKEND; default to TensorFlow.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_charades(tmp_path_factory):
    """A few tiny synthetic Charades-format videos (shared by the preprocessing and pipeline tests)."""
    from tests.preprocessing.data import make_tiny

    return make_tiny("charades", tmp_path_factory.mktemp("charades"))


@pytest.fixture(scope="session")
def tiny_toyota(tmp_path_factory):
    from tests.preprocessing.data import make_tiny

    return make_tiny("toyota", tmp_path_factory.mktemp("toyota"))
