"""preprocessing/kernels/: the Pallas TV-L1 kernel equals the keras.ops reference (Pallas interpret mode on CPU)."""

import keras
import numpy as np
import pytest

pytest.importorskip("jax", reason="the Pallas kernels are JAX code (setup.py's jax extra)")

from preprocessing import tvl1  # noqa: E402
from preprocessing.kernels import tvl1_inner_iterations, tvl1_pallas  # noqa: E402
from preprocessing.kernels.tvl1_pallas import tvl1_iterations  # noqa: E402

# Float32 with reordered sums (the kernel's per-pixel arithmetic vs XLA's fusions): equal to ~1e-5 px
# after a few iterations; 1e-4 absolute leaves room and still catches any stencil, border or halo error
# (those are >= 1e-2 here).
ATOL = 1e-4


def _state(seed, batch, height, width):
    rng = np.random.default_rng(seed)
    flow = rng.normal(0, 2, (batch, height, width, 2)).astype("float32")
    p_x = rng.uniform(-0.7, 0.7, (batch, height, width, 2)).astype("float32")
    p_y = rng.uniform(-0.7, 0.7, (batch, height, width, 2)).astype("float32")
    p_x[:, :, -1] = 0.0  # as the reference keeps them: forward differences are zero on the last column/row
    p_y[:, -1] = 0.0
    grad_w = rng.normal(0, 10, (batch, height, width, 2)).astype("float32")
    grad_w[0, :3, :3] = 0.0  # a flat patch: the thresholding's zero-gradient case
    grad_sq = (grad_w ** 2).sum(-1, keepdims=True)
    inv_grad_sq = (1.0 / np.maximum(grad_sq, 1e-10)).astype("float32")
    rho_c = rng.normal(0, 20, (batch, height, width, 1)).astype("float32")
    return flow, p_x, p_y, grad_w, inv_grad_sq, rho_c


def _reference(state, iterations, tau=0.25, lambda_=0.15, theta=0.3):
    step = tvl1._iteration(tau, lambda_, theta)
    out = keras.ops.fori_loop(0, iterations, step, tuple(keras.ops.convert_to_tensor(x) for x in state))
    return [keras.ops.convert_to_numpy(x) for x in out[:3]]


@pytest.mark.parametrize(("height", "width", "iterations", "block", "chunk"),
                         [(17, 23, 5, 16, 3),   # 2 x 3 tiles of 10 (ragged last ones), chunks 3 + 2
                          (9, 6, 4, 64, 4)])    # one small region (16 x 16) bigger than the image
def test_kernel_equals_reference(height, width, iterations, block, chunk):
    state = _state(0, 2, height, width)
    expected = _reference(state, iterations)
    got = tvl1_iterations(*state, tau=0.25, lambda_=0.15, theta=0.3, iterations=iterations, block=block,
                          chunk=chunk, interpret=True)
    moved = np.abs(expected[0] - state[0]).max()
    assert moved > 0.1  # the iterations really change the flow, so equality is not trivial
    for name, want, have in zip(("flow", "p_x", "p_y"), expected, got, strict=True):
        np.testing.assert_allclose(np.asarray(have), want, atol=ATOL, err_msg=name)


def test_short_halo_breaks_tile_seams():
    """With a 1-pixel halo for 5 iterations the tiles' seams go wrong (0.28 px here; 5e-7 with the 5-pixel
    halo the kernel uses): the halo is what makes the test above pass."""
    state = _state(1, 1, 17, 23)
    expected = _reference(state, 5)[0]
    launch = tvl1_pallas._launcher(1, 17, 23, 5, 0.25, 0.15, 0.3, 16, 8, True, halo=1)
    flat = [np.reshape(x[..., k], -1) for x in state[:3] for k in (0, 1)]
    constants = [np.reshape(x, -1) for x in (state[3][..., 0], state[3][..., 1], state[4][..., 0], state[5][..., 0])]
    got = launch(flat, constants)
    pixels = 17 * 23
    flow = np.stack([np.reshape(got[0][:pixels], (17, 23)), np.reshape(got[1][:pixels], (17, 23))], -1)
    assert np.abs(flow - expected[0]).max() > 1e-2


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "jax", reason="the kernel path of tvl1_flow is JAX-only")
def test_tvl1_flow_with_kernel_equals_reference():
    rng = np.random.default_rng(3)
    frame0 = rng.uniform(0, 255, (2, 24, 30)).astype("float32")
    frame1 = np.roll(frame0, (1, 2), axis=(1, 2))
    kwargs = {"scales": 2, "warps": 2, "iterations": 5}
    reference = keras.ops.convert_to_numpy(tvl1.tvl1_flow(frame0, frame1, implementation="reference", **kwargs))
    kernel = keras.ops.convert_to_numpy(tvl1.tvl1_flow(frame0, frame1, implementation="interpret", **kwargs))
    assert np.abs(reference).max() > 0.5
    np.testing.assert_allclose(kernel, reference, atol=1e-3)


def test_selection():
    assert tvl1_inner_iterations("reference") is None
    with pytest.raises(ValueError, match="implementation='fast'"):
        tvl1_inner_iterations("fast")
    if keras.backend.backend() != "jax":
        assert tvl1_inner_iterations("auto") is None
        with pytest.raises(ValueError, match="KERAS_BACKEND=jax"):
            tvl1_inner_iterations("kernel")
    else:
        import jax

        if jax.default_backend() == "cpu":
            assert tvl1_inner_iterations("auto") is None  # the CPU keeps the keras.ops reference
            with pytest.raises(ValueError, match="needs a GPU"):
                tvl1_inner_iterations("kernel")
        assert tvl1_inner_iterations("interpret") is not None


def test_kernel_lowers_through_triton():
    """Every operation of the kernel has a Pallas Triton lowering rule: lowering for CUDA (no GPU needed)
    yields Triton custom calls, one per chunk of iterations (10 = 4 + 4 + 2)."""
    import jax
    import jax.numpy as jnp

    maps = [jnp.zeros((2, 56, 56, 2))] * 4 + [jnp.zeros((2, 56, 56, 1))] * 2

    def run(*args):
        return tvl1_iterations(*args, tau=0.25, lambda_=0.15, theta=0.3, iterations=10)

    text = jax.jit(run).trace(*maps).lower(lowering_platforms=("cuda",)).as_text()
    assert text.count("xla.gpu.triton") == 3
