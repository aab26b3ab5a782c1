"""Choices the papers leave open, made as the reference implementation or the papers' own structures do."""

import keras

from model.assemblenet import build_assemblenet
from model.layers import BatchNorm
from model.structure import Structure, assemblenet50, assemblenet_plus50, tiny


def test_a_structure_file_without_a_sink_gets_the_sink_of_its_paper():
    for structure, expected in ((assemblenet_plus50(), "fc_then_pool"),  # object stem: AssembleNet++ A.3
                                (tiny(), "fc_then_pool"),  # object stem too
                                (assemblenet50(), "pool_then_fc")):  # RGB and flow only: AssembleNet A.5
        data = structure.to_json()
        del data["sink"]
        assert "object" in structure.modalities or expected == "pool_then_fc"
        assert Structure.from_json(data).sink == expected, structure.name


def test_every_convolution_is_batch_normalised_as_the_reference_implementation():
    model = build_assemblenet(tiny(), 4, frames=4, size=32)
    norms = [layer for layer in model._flatten_layers() if isinstance(layer, BatchNorm)]
    assert len(norms) > 10
    # TensorFlow Model Garden's AssembleNet(++) configs: norm_momentum=0.99, norm_epsilon=1e-5.
    assert {(layer.momentum, layer.epsilon) for layer in norms} == {(0.99, 1e-5)}
    assert keras.layers.BatchNormalization().epsilon == 1e-3  # what Keras' default would have given
