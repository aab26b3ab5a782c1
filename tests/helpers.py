"""Shared test helpers (the idea of keras-hub's test_case, kept small)."""

import json

import keras
import numpy as np


def run_layer_test(layer_cls, init_kwargs, input_data, expected_output_shape, *, run_fit=True,
                   expected_trainable_weights=None):
    """Standard checks for one custom layer.

    - `get_config` holds exactly the constructor arguments and survives a JSON round-trip;
    - symbolic (keras.Input) and eager output shapes match `expected_output_shape` (batch included);
    - a re-created layer with copied weights gives the same eager output;
    - one compiled fit step runs and changes at least one trainable weight.
    `input_data` is an array or a list/dict of arrays (a multi-input layer).
    """
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    for key in init_kwargs:
        assert key in config, f"{layer_cls.__name__}.get_config() misses constructor argument {key!r}"
    restored = layer_cls.from_config(json.loads(json.dumps(config)))
    assert restored.get_config() == json.loads(json.dumps(config)), "config changed in a JSON round-trip"

    def symbolic(x):
        return keras.Input(shape=x.shape[1:], batch_size=x.shape[0], dtype=str(x.dtype))

    if isinstance(input_data, dict):
        sym = {k: symbolic(v) for k, v in input_data.items()}
    elif isinstance(input_data, (list, tuple)):
        sym = [symbolic(v) for v in input_data]
    else:
        sym = symbolic(input_data)
    sym_out = layer_cls(**init_kwargs)(sym)
    assert tuple(sym_out.shape) == tuple(expected_output_shape), (sym_out.shape, expected_output_shape)

    eager = layer(input_data)
    assert tuple(eager.shape) == tuple(expected_output_shape), (eager.shape, expected_output_shape)
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(eager)))

    restored(input_data)
    restored.set_weights(layer.get_weights())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored(input_data)),
                               keras.ops.convert_to_numpy(eager), rtol=1e-5, atol=1e-5)
    if expected_trainable_weights is not None:
        assert len(layer.trainable_weights) == expected_trainable_weights

    if run_fit and layer.trainable_weights:
        model = keras.Model(sym, layer(sym))
        before = [keras.ops.convert_to_numpy(w).copy() for w in layer.trainable_weights]
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        target = np.random.default_rng(0).normal(size=tuple(expected_output_shape)).astype("float32")
        model.fit(input_data, target, batch_size=expected_output_shape[0], epochs=1, verbose=0)
        after = [keras.ops.convert_to_numpy(w) for w in layer.trainable_weights]
        assert any(not np.allclose(b, a) for b, a in zip(before, after, strict=True)), "fit step changed no weight"
    return layer


def gradients(fn, *args):
    """fn(*args) (a scalar) and its gradients with respect to `args` (arrays), under the active backend."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        value, grads = jax.value_and_grad(fn, argnums=tuple(range(len(args))))(*args)
    elif backend == "tensorflow":
        import tensorflow as tf

        args = [tf.convert_to_tensor(a) for a in args]
        with tf.GradientTape() as tape:
            tape.watch(args)
            value = fn(*args)
        grads = tape.gradient(value, args)
    else:
        raise NotImplementedError(f"gradients() does not support backend {backend!r}")
    return keras.ops.convert_to_numpy(value), [keras.ops.convert_to_numpy(g) for g in grads]
