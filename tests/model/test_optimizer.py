"""Weight decay as an L2 term through the momentum (AssembleNet A.6), under both backends."""

import keras
import numpy as np
import pytest

from model.optimizer import MomentumL2, decays

LR, MU, WD, STEPS = 0.1, 0.9, 0.05, 12


def l2_through_momentum(steps, lr=LR, mu=MU, wd=WD):
    """Closed form of w_N / w_0 with zero data gradient: m ← μm − lr·wd·w, w ← w + m, m_0 = 0.

    (w, m) evolves by the matrix A = [[1 − lr·wd, μ], [−lr·wd, μ]], so w_N = (A^N)[0, 0] · w_0."""
    a = np.array([[1 - lr * wd, mu], [-lr * wd, mu]])
    return np.linalg.matrix_power(a, steps)[0, 0]


def _model():
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="fc")(x))


def test_closed_form_differs_from_decoupled_decay():
    # The test below can tell the two apart: decoupled decay shrinks by (1 − lr·wd)^N only.
    assert abs(l2_through_momentum(STEPS) - (1 - LR * WD) ** STEPS) > 0.05


def test_kernels_shrink_by_the_l2_through_momentum_factor_and_nothing_else_decays():
    model = _model()
    optimizer = MomentumL2(learning_rate=LR, momentum=MU, l2=WD)
    variables = model.trainable_variables
    for v in variables:  # non-zero biases and BN parameters, to see that they do not decay
        v.assign(np.random.default_rng(0).normal(size=v.shape).astype("float32") + 1.0)
    before = {v.path: keras.ops.convert_to_numpy(v).copy() for v in variables}
    zeros = [keras.ops.zeros(v.shape) for v in variables]
    for _ in range(STEPS):
        optimizer.apply(zeros, variables)
    factor = l2_through_momentum(STEPS)
    for v in variables:
        after = keras.ops.convert_to_numpy(v)
        expected = before[v.path] * (factor if v.path.endswith("kernel") else 1.0)
        np.testing.assert_allclose(after, expected, rtol=1e-5, err_msg=v.path)
    assert sorted(v.path for v in variables if decays(v)) == ["conv/kernel", "fc/kernel"]


def test_decay_goes_through_the_momentum_inside_a_compiled_fit():
    model = _model()
    kernel = model.get_layer("fc").kernel
    start = keras.ops.convert_to_numpy(kernel).copy()
    model.compile(optimizer=MomentumL2(learning_rate=LR, momentum=MU, l2=WD),
                  loss=lambda y, p: 0.0 * keras.ops.sum(p))  # zero data gradient
    x, y = np.zeros((4, 6, 6, 3), "float32"), np.zeros((4, 2), "float32")
    model.fit(x, y, batch_size=4, epochs=STEPS, verbose=0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(kernel), start * l2_through_momentum(STEPS), rtol=1e-5)


def test_config_round_trip_and_refuses_decoupled_decay():
    optimizer = MomentumL2(learning_rate=0.2, momentum=0.9, l2=1e-4)
    restored = MomentumL2.from_config(optimizer.get_config())
    assert restored.l2 == 1e-4 and restored.momentum == 0.9
    with pytest.raises(ValueError, match="decoupled"):
        MomentumL2(l2=1e-4, weight_decay=1e-4)
    with pytest.raises(ValueError, match="l2=-1"):
        MomentumL2(l2=-1)


def test_defaults_decay_nothing_and_other_arguments_reach_sgd():
    # No l2 given: no decay term at all (l2 = 0 is valid, only a negative one is refused); SGD's own
    # learning rate default; Keras's optimizer arguments (here clipnorm, name) pass through.
    plain = MomentumL2()
    assert plain.l2 == 0.0 and plain.momentum == 0.9
    assert float(keras.ops.convert_to_numpy(plain.learning_rate)) == pytest.approx(0.01)
    v = keras.Variable(np.full((2, 2), 3.0, "float32"), name="kernel")
    plain.apply([keras.ops.zeros((2, 2))], [v])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(v), 3.0)
    clipped = MomentumL2(l2=0.0, clipnorm=0.5, name="sgd_l2")
    assert (clipped.clipnorm, clipped.name) == (0.5, "sgd_l2")
    with pytest.raises(ValueError, match=r"^MomentumL2: pass the decay as l2=, not weight_decay="):
        MomentumL2(weight_decay=1e-4)
