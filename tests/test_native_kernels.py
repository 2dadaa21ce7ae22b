"""The 'native' convolutions and pools (C++ kernels through the XLA FFI) compute what lax.conv and nn.max_pool do."""
import shutil

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from emojax import kernels
from emojax.kernels import native

needs_compiler = pytest.mark.skipif(
    not (shutil.which('c++') or shutil.which('g++') or shutil.which('clang++')),
    reason='no C++ compiler on this machine to build emojax/kernels/native.cc')

CASES = [  # (x shape, kernel window, C_out, padding)
    ((2, 5, 9, 11, 3), (3, 3, 3), 16, 'VALID'),  # the first video layer: 3 input channels
    ((3, 4, 7, 8, 16), (3, 3, 3), 32, 'VALID'),  # 3 batch rows x 2 times: more rows than threads
    ((1, 4, 5, 6, 32), (3, 3, 3), 64, ((1, 1), (0, 2), (2, 0))),
    ((2, 4, 5, 30, 8), (2, 3, 2), 5, 'SAME'),  # channels that are no multiple of 16; a row longer than a tile
    ((2, 4, 4, 4, 64), (3, 3, 3), 128, 'VALID'),
    ((2, 2, 3, 9, 64), (1, 1, 3), 128, 'VALID'),  # rows of 7 (the last video layer's): tiles of 4 and 3
    # rows of 2, many per block: the kernel gradient sums each block in several groups of rows
    ((16, 18, 20, 4, 16), (3, 3, 3), 16, 'VALID'),
    ((2, 9, 13, 3), (5, 7), 24, 'SAME'),  # 2D: depth 1
]


def _reference(x, w, padding):
  spatial = 'DHW'[5 - x.ndim:]
  dn = lax.conv_dimension_numbers(x.shape, w.shape, (f'N{spatial}C', f'{spatial}IO', f'N{spatial}C'))
  return lax.conv_general_dilated(x, w, (1,) * (x.ndim - 2), padding, dimension_numbers=dn,
                                  precision=lax.Precision.HIGHEST)


def _native(x, w, padding):
  spatial = 'DHW'[5 - x.ndim:]
  dn = lax.conv_dimension_numbers(x.shape, w.shape, (f'N{spatial}C', f'{spatial}IO', f'N{spatial}C'))
  return native.conv_native(x, w, (1,) * (x.ndim - 2), padding, dimension_numbers=dn)


@needs_compiler
@pytest.mark.parametrize('shape,window,features,padding', CASES)
def test_native_matches_lax_conv_values_and_gradients(shape, window, features, padding):
  x = jax.random.normal(jax.random.key(0), shape)
  w = jax.random.normal(jax.random.key(1), (*window, shape[-1], features)) * 0.2

  def loss(conv):
    return jax.value_and_grad(lambda x, w: jnp.sum(jnp.sin(conv(x, w, padding))), argnums=(0, 1))

  y, y_ref = jax.jit(_native, static_argnums=2)(x, w, padding), _reference(x, w, padding)
  assert y.shape == y_ref.shape and y.dtype == jnp.float32
  # float32 sums of up to 864 products, in another order than XLA's
  np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-4)
  (l, (gx, gw)), (l_ref, (gx_ref, gw_ref)) = jax.jit(loss(_native))(x, w), loss(_reference)(x, w)
  np.testing.assert_allclose(l, l_ref, rtol=1e-4)
  np.testing.assert_allclose(gx, gx_ref, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(gw, gw_ref, rtol=1e-4, atol=1e-3)


@needs_compiler
def test_native_conv_module_is_an_nn_conv_and_keeps_bfloat16():
  x = jax.random.normal(jax.random.key(0), (2, 4, 6, 7, 3))
  conv = kernels.conv_function('native')
  module = nn.Conv(16, (3, 3, 3), padding='VALID', conv_general_dilated=conv)
  reference = nn.Conv(16, (3, 3, 3), padding='VALID')
  params = reference.init(jax.random.key(1), x)['params']
  np.testing.assert_allclose(module.apply({'params': params}, x), reference.apply({'params': params}, x),
                             rtol=1e-5, atol=1e-5)
  y = nn.Conv(16, (3, 3, 3), padding='VALID', conv_general_dilated=conv, dtype=jnp.bfloat16).apply(
      {'params': params}, x.astype(jnp.bfloat16))
  assert y.dtype == jnp.bfloat16


@needs_compiler
def test_independent_native_convs_in_one_program_run_concurrently_without_deadlock():
  # XLA may run independent custom calls at once on its thread pool; each waits only for rows it hands out.
  xs = [jax.random.normal(jax.random.key(i), (4, 5, 8, 9, 16)) for i in range(4)]
  w = jax.random.normal(jax.random.key(9), (3, 3, 3, 16, 16)) * 0.1
  ys = jax.jit(lambda xs, w: [_native(x, w, 'VALID') for x in xs])(xs, w)
  for x, y in zip(xs, ys):
    np.testing.assert_allclose(y, _reference(x, w, 'VALID'), rtol=1e-5, atol=1e-5)


@needs_compiler
def test_the_library_is_built_once_per_machine_and_reused(tmp_path, monkeypatch):
  monkeypatch.setenv('EMOJAX_CACHE', str(tmp_path))
  library = native.build()
  assert library.parent == tmp_path / 'native' and library.exists()
  built_at = library.stat().st_mtime_ns
  assert native.build() == library and library.stat().st_mtime_ns == built_at
  assert [p.name for p in library.parent.iterdir()] == [library.name]  # no temporary left behind


def test_without_a_compiler_the_fast_plan_falls_back_to_xla(monkeypatch, capsys):
  monkeypatch.setenv('CXX', '/nonexistent/c++')
  with pytest.raises(native.NativeUnavailable, match='does not run'):
    native.build()
  def no_compiler():
    raise native.NativeUnavailable('No C++ compiler found (set CXX, or install g++) to build the native convolutions.')

  monkeypatch.setattr(native, '_register', no_compiler)
  assert native.available.__wrapped__() is False  # the uncached function: the fallback says so, once, in one line
  assert capsys.readouterr().err == ('Native convolution kernels unavailable (No C++ compiler found (set CXX, or '
                                     'install g++) to build the native convolutions.); the XLA convolutions run '
                                     'instead, slower on a CPU (emojax.kernels.native.require() raises the full '
                                     'reason).\n')
  monkeypatch.setattr(native, 'available', lambda: False)
  fast_video, without_native = kernels.CPU_PLANS['video']
  assert 'native' in fast_video and not any('native' in impl for impl in without_native)
  assert kernels.resolve('fast', backend='cpu').video == without_native
  monkeypatch.setattr(native, 'available', lambda: True)
  assert kernels.resolve('fast', backend='cpu').video == fast_video


def test_unsupported_convolutions_are_rejected_with_a_clear_error():
  x, w = jnp.ones((1, 4, 5, 6, 3)), jnp.ones((3, 3, 3, 3, 16))
  dn = lax.conv_dimension_numbers(x.shape, w.shape, ('NDHWC', 'DHWIO', 'NDHWC'))
  with pytest.raises(ValueError, match='strides'):
    native.conv_native(x, w, (2, 1, 1), 'VALID', dimension_numbers=dn)
  with pytest.raises(ValueError, match='2D and 3D'):
    native.conv_native(jnp.ones((1, 5, 3)), jnp.ones((3, 3, 4)), (1,), 'VALID')
  with pytest.raises(ValueError, match='does not fit'):
    native.conv_native(x, jnp.ones((5, 3, 3, 3, 16)), (1, 1, 1), 'VALID', dimension_numbers=dn)


@needs_compiler
@pytest.mark.parametrize('shape,window,strides', [
    ((2, 3, 9, 11, 16), (1, 3, 3), (1, 2, 2)),  # the video network's pools
    ((1, 2, 8, 10, 20), (1, 2, 3), (1, 1, 2)),  # channels that are no multiple of 16
    ((2, 8, 12, 24), (2, 2), (2, 2)),  # 2D: the audio network's pools
])
def test_native_max_pool_matches_nn_max_pool_values_and_gradients(shape, window, strides):
  x = jax.random.normal(jax.random.key(0), shape)

  def loss(pool):
    return jax.value_and_grad(lambda x: jnp.sum(jnp.sin(pool(x))))

  by_native = loss(lambda x: native.max_pool(x, window, strides))
  reference = loss(lambda x: nn.max_pool(x, window, strides=strides))
  (value, grad), (value_ref, grad_ref) = jax.jit(by_native)(x), reference(x)
  np.testing.assert_allclose(value, value_ref, rtol=1e-6)
  np.testing.assert_allclose(grad, grad_ref, rtol=1e-6, atol=1e-7)


@needs_compiler
def test_native_max_pool_gives_a_tie_to_the_first_maximum_as_nn_max_pool_does():
  x = jnp.zeros((1, 1, 5, 5, 16)).at[0, 0, 2, 2, 3].set(-1.0)  # a blank frame: every window ties
  grad = jax.grad(lambda x: jnp.sum(kernels.max_pool(x, (1, 3, 3), (1, 2, 2), 'native')))(x)
  np.testing.assert_array_equal(grad, jax.grad(lambda x: jnp.sum(nn.max_pool(x, (1, 3, 3), strides=(1, 2, 2))))(x))
  assert float(grad.sum()) == 4 * 16  # one unit per window and channel, nothing shared


def test_fast_pool_is_native_only_where_the_native_kernels_run(monkeypatch):
  monkeypatch.setattr(native, 'available', lambda: True)
  assert kernels.resolve('xla', 'fast', backend='cpu').pool == 'native'
  assert kernels.resolve('xla', 'fast', backend='gpu').pool == 'slices'
  monkeypatch.setattr(native, 'available', lambda: False)
  assert kernels.resolve('xla', 'fast', backend='cpu').pool == 'slices'
  assert kernels.resolve('xla', 'xla', backend='cpu').pool == 'xla'
  with pytest.raises(ValueError, match='max-pool impl'):
    kernels.max_pool(jnp.ones((1, 4, 6, 6, 16)), (1, 3, 3), (1, 2, 2), 'average')
  with pytest.raises(ValueError, match='time window'):
    native.max_pool(jnp.ones((1, 4, 6, 6, 16)), (2, 2, 2), (2, 2, 2))


@needs_compiler
def test_native_gradients_repeat_bit_for_bit():
  # The kernel gradient sums fixed blocks of rows in a fixed order, whichever thread takes which block.
  x = jax.random.normal(jax.random.key(0), (8, 6, 7, 9, 16))
  w = jax.random.normal(jax.random.key(1), (3, 3, 3, 16, 32)) * 0.1
  grad = jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.sin(_native(x, w, 'VALID'))), argnums=(0, 1)))
  first = grad(x, w)
  for _ in range(3):
    for got, want in zip(grad(x, w), first):
      np.testing.assert_array_equal(got, want)
