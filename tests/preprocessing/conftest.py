import pytest

from tests.preprocessing.data import make_tiny


@pytest.fixture(scope="session")
def tiny_charades(tmp_path_factory):
    return make_tiny("charades", tmp_path_factory.mktemp("charades"))


@pytest.fixture(scope="session")
def tiny_toyota(tmp_path_factory):
    return make_tiny("toyota", tmp_path_factory.mktemp("toyota"))
