"""The TV-L1 primal-dual inner iterations as one Pallas kernel (JAX; Triton lowering on NVIDIA GPUs).

`preprocessing.tvl1._iteration` is the reference: per iteration it reads and writes ~10 float maps, which XLA
does through HBM (~60 bytes per pixel per iteration). This kernel runs `chunk` iterations per launch with a
tile's state in registers; the one-pixel shifts of the stencil (backward-difference divergence of p,
forward-difference gradient of u) go through a per-program scratch buffer that stays in L1/L2, separated by
block barriers. HBM sees each map once per chunk instead of once per iteration.

Grid: one program per (pair, tile row, tile column), so a batch of pairs fills the GPU in one launch. A
program loads a `rows x cols` region (powers of two, as Triton's blocks) made of its tile and a halo of
`chunk` pixels on every side, runs `chunk` iterations and writes back the tile only. The stencil spreads
errors from the region's clamped edges by at most one pixel per iteration (the divergence looks one pixel
left/up, the gradient one right/down), so after `chunk` iterations the tile equals the reference; the image
borders follow the reference exactly (zero gradient on the last row/column, zero p before the first).

Every map is passed flat (B*H*W,) and indexed with computed offsets (Triton pointer arithmetic).
"""

import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

# Region side (Triton block) and iterations per launch: 64 - 2 * 4 = 56 and 224 = 4 x 56, so at 224²
# the finest level is 4 x 4 tiles with 31% halo work, and each map crosses HBM once per 4 iterations.
DEFAULT_BLOCK = 64
DEFAULT_CHUNK = 4
DEFAULT_NUM_WARPS = 8

_STATE = ("u1", "u2", "px1", "px2", "py1", "py2")


def _next_power_of_2(n):
    return 1 << max(0, math.ceil(math.log2(max(1, n))))


def _region(side, halo, block):
    """(region side, tile side, tiles) for an image side: one small region when the side fits."""
    region = min(block, max(16, _next_power_of_2(side + 2 * halo)))
    tile = region - 2 * halo
    if tile < 1:
        raise ValueError(f"kernel block {block} leaves no tile for a halo of {halo} (chunk too large)")
    return region, tile, -(-side // tile)


def _kernel(u1, u2, px1, px2, py1, py2, gx, gy, inv, rhoc,  # inputs, flat (B*H*W [+ trash],)
            o_u1, o_u2, o_px1, o_px2, o_py1, o_py2,  # outputs, flat (B*H*W + rows*cols,)
            s_u1, s_u2, s_px1, s_px2, s_py1, s_py2,  # scratch, flat (programs*rows*cols,)
            *, height, width, rows, cols, tile_rows, tile_cols, halo, iterations, tau, lambda_, theta,
            barrier):
    b, ty, tx = pl.program_id(0), pl.program_id(1), pl.program_id(2)
    batch_pixels = pl.num_programs(0) * (height * width)
    local_r = jnp.arange(rows, dtype=jnp.int32)[:, None]
    local_c = jnp.arange(cols, dtype=jnp.int32)[None, :]
    r = ty * tile_rows - halo + local_r  # image row of each region pixel, (rows, 1)
    c = tx * tile_cols - halo + local_c  # image column, (1, cols)
    inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
    offsets = b * (height * width) + jnp.clip(r, 0, height - 1) * width + jnp.clip(c, 0, width - 1)

    program = (b * pl.num_programs(1) + ty) * pl.num_programs(2) + tx
    base = program * (rows * cols)
    here = base + local_r * cols + local_c
    left = base + local_r * cols + jnp.maximum(local_c - 1, 0)
    right = base + local_r * cols + jnp.minimum(local_c + 1, cols - 1)
    up = base + jnp.maximum(local_r - 1, 0) * cols + local_c
    down = base + jnp.minimum(local_r + 1, rows - 1) * cols + local_c
    first_col, last_col = c == 0, c == width - 1
    first_row, last_row = r == 0, r == height - 1

    def load(ref):
        return plgpu.load(ref.at[offsets], mask=inside, other=0.0)

    grad_x, grad_y, inv_grad_sq, rho_c = load(gx), load(gy), load(inv), load(rhoc)
    lambda_theta = lambda_ * theta
    tau_theta = tau / theta

    def sync():
        if barrier:
            plgpu.debug_barrier()

    def body(_, state):
        u_1, u_2, p_x1, p_x2, p_y1, p_y2 = state
        # Thresholding (preprocessing.tvl1._iteration): v = u - clip(rho/|∇I1|², ±λθ) ∇I1.
        rho = rho_c + grad_x * u_1 + grad_y * u_2
        step = jnp.clip(rho * inv_grad_sq, -lambda_theta, lambda_theta)
        v_1, v_2 = u_1 - step * grad_x, u_2 - step * grad_y
        # Primal step u = v + θ div p; div by backward differences, p = 0 before the first row/column.
        for ref, value in zip((s_px1, s_px2, s_py1, s_py2), (p_x1, p_x2, p_y1, p_y2), strict=True):
            plgpu.store(ref.at[here], value)
        sync()
        zero = jnp.zeros_like(v_1)
        div_1 = (p_x1 - jnp.where(first_col, zero, plgpu.load(s_px1.at[left]))
                 + p_y1 - jnp.where(first_row, zero, plgpu.load(s_py1.at[up])))
        div_2 = (p_x2 - jnp.where(first_col, zero, plgpu.load(s_px2.at[left]))
                 + p_y2 - jnp.where(first_row, zero, plgpu.load(s_py2.at[up])))
        u_1, u_2 = v_1 + theta * div_1, v_2 + theta * div_2
        # Dual step with forward differences, zero on the last row/column.
        plgpu.store(s_u1.at[here], u_1)
        plgpu.store(s_u2.at[here], u_2)
        sync()
        ux_1 = jnp.where(last_col, zero, plgpu.load(s_u1.at[right]) - u_1)
        uy_1 = jnp.where(last_row, zero, plgpu.load(s_u1.at[down]) - u_1)
        ux_2 = jnp.where(last_col, zero, plgpu.load(s_u2.at[right]) - u_2)
        uy_2 = jnp.where(last_row, zero, plgpu.load(s_u2.at[down]) - u_2)
        norm_1 = 1.0 + tau_theta * jnp.sqrt(ux_1 * ux_1 + uy_1 * uy_1)
        norm_2 = 1.0 + tau_theta * jnp.sqrt(ux_2 * ux_2 + uy_2 * uy_2)
        return (u_1, u_2, (p_x1 + tau_theta * ux_1) / norm_1, (p_x2 + tau_theta * ux_2) / norm_2,
                (p_y1 + tau_theta * uy_1) / norm_1, (p_y2 + tau_theta * uy_2) / norm_2)

    state = jax.lax.fori_loop(0, iterations, body, tuple(load(ref) for ref in (u1, u2, px1, px2, py1, py2)))
    tile = ((local_r >= halo) & (local_r < halo + tile_rows) & (local_c >= halo) & (local_c < halo + tile_cols)
            & inside)
    # Lanes outside the tile store nowhere; their offsets still point past the images (a trash area one
    # region long), not at the clamped border pixels another lane of this store writes: Pallas' interpreter
    # scatters masked stores, where duplicate offsets would race.
    trash = batch_pixels + local_r * cols + local_c
    for ref, value in zip((o_u1, o_u2, o_px1, o_px2, o_py1, o_py2), state, strict=True):
        plgpu.store(ref.at[jnp.where(tile, offsets, trash)], value, mask=tile)


@functools.lru_cache(maxsize=None)
def _launcher(batch, height, width, iterations, tau, lambda_, theta, block, num_warps, interpret, halo=None):
    """The kernel for one shape and parameter set; `halo` defaults to `iterations` (the exact tile)."""
    halo = iterations if halo is None else halo
    rows, tile_rows, tiles_y = _region(height, halo, block)
    cols, tile_cols, tiles_x = _region(width, halo, block)
    kernel = functools.partial(
        _kernel, height=height, width=width, rows=rows, cols=cols, tile_rows=tile_rows, tile_cols=tile_cols,
        halo=halo, iterations=iterations, tau=tau, lambda_=lambda_, theta=theta, barrier=not interpret)
    image = jax.ShapeDtypeStruct((batch * height * width + rows * cols,), jnp.float32)  # + trash area
    scratch = jax.ShapeDtypeStruct((batch * tiles_y * tiles_x * rows * cols,), jnp.float32)
    call = pl.pallas_call(
        kernel, out_shape=[image] * 6 + [scratch] * 6, grid=(batch, tiles_y, tiles_x),
        compiler_params=plgpu.CompilerParams(num_warps=num_warps, num_stages=1),
        interpret=interpret, name=f"tvl1_iterations_{rows}x{cols}")

    def launch(state, constants):
        return call(*state, *constants)[:6]

    return launch


def tvl1_iterations(flow, p_x, p_y, grad_w, inv_grad_sq, rho_c, *, tau, lambda_, theta, iterations,
                    block=None, chunk=None, num_warps=None, interpret=False):
    """`iterations` primal-dual iterations of `preprocessing.tvl1._iteration` on (B, H, W, ·) maps.

    Same arguments and results as the reference loop: flow, p_x, p_y (B, H, W, 2), grad_w (B, H, W, 2),
    inv_grad_sq and rho_c (B, H, W, 1) -> (flow, p_x, p_y). `interpret=True` runs Pallas' interpreter
    (CPU tests); otherwise the Triton lowering (NVIDIA GPU). block, chunk, num_warps: region side,
    iterations per launch and Triton warps per program (None: this module's DEFAULT_*, which
    benchmarks/flow.py --kernel-configs sets to compare tilings).
    """
    block = DEFAULT_BLOCK if block is None else block
    chunk = DEFAULT_CHUNK if chunk is None else chunk
    num_warps = DEFAULT_NUM_WARPS if num_warps is None else num_warps
    batch, height, width = flow.shape[0], flow.shape[1], flow.shape[2]

    def flat(x):
        return jnp.reshape(x.astype(jnp.float32), (-1,))

    state = [flat(x[..., k]) for x in (flow, p_x, p_y) for k in (0, 1)]
    constants = [flat(grad_w[..., 0]), flat(grad_w[..., 1]), flat(inv_grad_sq[..., 0]), flat(rho_c[..., 0])]
    done = 0
    while done < iterations:
        count = min(chunk, iterations - done)
        launch = _launcher(batch, height, width, count, float(tau), float(lambda_), float(theta), block,
                           num_warps, interpret)
        state = launch(state, constants)  # the outputs carry a trash area after the images
        done += count
    pixels = batch * height * width

    def stack(a, b):
        return jnp.stack([jnp.reshape(a[:pixels], (batch, height, width)),
                          jnp.reshape(b[:pixels], (batch, height, width))], -1)

    return stack(state[0], state[1]), stack(state[2], state[3]), stack(state[4], state[5])
