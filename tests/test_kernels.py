"""Every kernel impl computes what `nn.Conv` and `nn.max_pool` do, and the plans resolve as documented."""
import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from emojax import kernels
from emojax.kernels import fft, fold2d, native, patches, split

# The paper's layers (DESIGN.md) at small spatial sizes: (input shape without batch, kernel, C_out, padding).
PAPER_LAYERS = {
    'audio1': ((20, 26, 3), (12, 16), 16, ((6, 6), (8, 8))),
    'audio2': ((10, 13, 16), (8, 12), 24, ((4, 4), (6, 6))),
    'audio3': ((6, 9, 24), (5, 7), 32, ((2, 2), (3, 3))),
    'video1': ((5, 9, 11, 3), (3, 3, 3), 16, 'VALID'),
    'video2': ((4, 6, 7, 16), (3, 3, 3), 32, 'VALID'),
    'video4': ((3, 3, 3, 64), (3, 3, 3), 128, 'VALID'),
}


def _conv(features, kernel, padding, impl, **kwargs):
  return nn.Conv(features, kernel, padding=padding, conv_general_dilated=kernels.conv_function(impl), **kwargs)


def _pair(layer, impl):
  shape, kernel, features, padding = layer
  return _conv(features, kernel, padding, impl), jax.random.normal(
      jax.random.key(0), (2, *shape))


def _loss_and_grads(module, params, x):
  def loss(params, x):
    y = module.apply({'params': params}, x)
    return jnp.sum(jnp.sin(y))  # a non-linear read-out so the cotangent differs per element

  return jax.value_and_grad(loss, argnums=(0, 1))(params, x)


@pytest.mark.parametrize('name,impl', [(name, impl) for name in sorted(PAPER_LAYERS)
                                       for impl in ('patches', 'fft', 'fold2d', 'fold2d+patches:2')
                                       if 'fold2d' not in impl or len(PAPER_LAYERS[name][1]) == 3])  # 3D only
def test_fast_impls_match_nn_conv_forward_and_gradients(name, impl):
  reference = nn.Conv(PAPER_LAYERS[name][2], PAPER_LAYERS[name][1], padding=PAPER_LAYERS[name][3])
  patches, x = _pair(PAPER_LAYERS[name], impl)
  params = reference.init(jax.random.key(1), x)['params']
  params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(2), p.shape), params)  # non-zero bias
  y_ref, y = reference.apply({'params': params}, x), patches.apply({'params': params}, x)
  assert y.shape == y_ref.shape
  np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-4)
  (l_ref, (gp_ref, gx_ref)), (l, (gp, gx)) = (_loss_and_grads(reference, params, x),
                                              _loss_and_grads(patches, params, x))
  np.testing.assert_allclose(l, l_ref, rtol=1e-4)
  np.testing.assert_allclose(gx, gx_ref, rtol=1e-4, atol=1e-4)
  for key in ('kernel', 'bias'):
    np.testing.assert_allclose(gp[key], gp_ref[key], rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize('fold', [0, 1, 2, 3])
def test_every_fold_of_a_3d_kernel_gives_the_same_result(fold):
  layer = PAPER_LAYERS['video2']
  reference, x = _pair(layer, 'xla')
  params = reference.init(jax.random.key(1), x)['params']
  np.testing.assert_allclose(_pair(layer, f'patches:{fold}')[0].apply({'params': params}, x),
                             reference.apply({'params': params}, x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('padding,strides,dilation', [
    ('SAME', (1, 1), (1, 1)),
    ('VALID', (1, 1), (1, 1)),
    (((2, 1), (0, 3)), (2, 3), (1, 1)),
    (((1, 0), (4, 4)), (2, 1), (1, 2)),
    (2, (1, 1), (2, 2)),
])
def test_conv_patches_matches_lax_for_padding_strides_and_dilation(padding, strides, dilation):
  x = jax.random.normal(jax.random.key(0), (2, 9, 11, 3))
  w = jax.random.normal(jax.random.key(1), (3, 4, 3, 5))
  pads = padding if not isinstance(padding, int) else [(padding, padding)] * 2
  dn = lax.conv_dimension_numbers(x.shape, w.shape, ('NHWC', 'HWIO', 'NHWC'))

  def reference(x, w):
    return lax.conv_general_dilated(x, w, strides, pads, rhs_dilation=dilation, dimension_numbers=dn)

  def by_patches(x, w):
    return patches.conv_patches(x, w, strides, pads, rhs_dilation=dilation, dimension_numbers=dn)

  y_ref, vjp_ref = jax.vjp(reference, x, w)
  y, vjp = jax.vjp(by_patches, x, w)
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-4)
  cotangent = jax.random.normal(jax.random.key(2), y.shape)
  for got, want in zip(vjp(cotangent), vjp_ref(cotangent)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_param_trees_and_initialisation_are_those_of_nn_conv():

  class Net(nn.Module):
    impl: str

    @nn.compact
    def __call__(self, x):
      x = nn.relu(_conv(4, (3, 5), ((1, 1), (2, 2)), self.impl)(x))
      return _conv(6, (2, 2), 'VALID', self.impl, use_bias=False)(x)

  class Plain(nn.Module):

    @nn.compact
    def __call__(self, x):
      x = nn.relu(nn.Conv(4, (3, 5), padding=((1, 1), (2, 2)))(x))
      return nn.Conv(6, (2, 2), padding='VALID', use_bias=False)(x)

  x = jnp.ones((1, 7, 9, 2))
  trees = [m.init(jax.random.key(3), x)['params'] for m in (Plain(), Net('xla'), Net('patches'), Net('fft'))]
  for tree in trees[1:]:
    assert jax.tree.structure(tree) == jax.tree.structure(trees[0])
    jax.tree.map(np.testing.assert_array_equal, tree, trees[0])
  assert trees[0]['Conv_0']['kernel'].shape == (3, 5, 2, 4)
  assert set(trees[0]['Conv_1']) == {'kernel'}


def test_default_fold_keeps_the_im2col_growth_bounded():
  assert patches.default_fold((12, 16)) == 1
  assert patches.default_fold((5, 7)) == 1
  assert patches.default_fold((3, 3, 3)) == 3
  assert patches.default_fold((40,)) == 1


def test_bad_arguments_are_rejected():
  for impl in ('winograd', 'fft:2', 'patches:two', 'fold2d+winograd', 'fold2d+patches+fft'):
    with pytest.raises(ValueError, match='impl'):
      kernels.conv_function(impl)
  x, w = jnp.ones((1, 5, 5, 2)), jnp.ones((3, 3, 2, 4))
  with pytest.raises(ValueError, match='fold'):
    patches.conv_patches(x, w, (1, 1), 'VALID', fold=3)
  with pytest.raises(ValueError, match='does not fit'):
    patches.conv_patches(x, jnp.ones((7, 3, 2, 4)), (1, 1), 'VALID')
  with pytest.raises(ValueError, match='feature groups'):
    patches.conv_patches(x, jnp.ones((3, 3, 1, 4)), (1, 1), 'VALID', feature_group_count=2)


def test_large_batches_are_chunked_with_the_same_values_and_gradients(monkeypatch):
  layer = PAPER_LAYERS['audio2']
  module, x = _pair(layer, 'patches')
  x = jnp.concatenate([x, -x, 2 * x])  # batch 6
  params = module.init(jax.random.key(1), x)['params']
  whole = _loss_and_grads(module, params, x)
  monkeypatch.setattr(patches, 'MAX_IM2COL_BYTES', 20_000)  # forces 3 chunks of 2
  assert patches._num_chunks(6, 50_000) == 3
  jaxpr = str(jax.make_jaxpr(lambda x: module.apply({'params': params}, x))(x))
  assert 'checkpoint' in jaxpr or 'remat' in jaxpr
  chunked = _loss_and_grads(module, params, x)
  for got, want in zip(jax.tree.leaves(chunked), jax.tree.leaves(whole)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


_2D_CASES = [((2, 9, 11, 3), (3, 4), 'SAME'),
             ((2, 9, 11, 3), (3, 4), ((2, 1), (0, 3))),  # asymmetric
             ((2, 13, 7, 2), (13, 1), 'VALID')]  # kernel as tall as the input
_3D_CASES = [((2, 5, 6, 7, 3), (3, 2, 3), ((1, 1), (0, 1), (2, 0))),
             ((2, 6, 9, 8, 4), (3, 3, 3), 'VALID'),
             ((2, 4, 5, 6, 2), (2, 4, 3), 'SAME')]  # even kernel sides: uneven 'SAME' padding inside fold2d


@pytest.mark.parametrize('shape,kernel,padding,conv', [
    *[(*case, fft.conv_fft) for case in _2D_CASES + _3D_CASES],
    *[(*case, fold2d.conv_fold2d) for case in _3D_CASES]])  # fold2d folds 3D kernels only
def test_conv_fft_and_fold2d_match_lax_values_and_vjp(shape, kernel, padding, conv):
  x = jax.random.normal(jax.random.key(0), shape)
  w = jax.random.normal(jax.random.key(1), (*kernel, shape[-1], 5))
  spatial = 'DHW'[3 - len(kernel):]
  dn = lax.conv_dimension_numbers(x.shape, w.shape, (f'N{spatial}C', f'{spatial}IO', f'N{spatial}C'))
  ones = (1,) * len(kernel)
  y_ref, vjp_ref = jax.vjp(lambda x, w: lax.conv_general_dilated(x, w, ones, padding, dimension_numbers=dn), x, w)
  y, vjp = jax.vjp(lambda x, w: conv(x, w, ones, padding, dimension_numbers=dn), x, w)
  assert y.shape == y_ref.shape and y.dtype == y_ref.dtype
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-4)
  cotangent = jax.random.normal(jax.random.key(2), y.shape)
  for got, want in zip(vjp(cotangent), vjp_ref(cotangent)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_conv_fft_in_batch_chunks_matches_lax_values_and_vjp(monkeypatch):
  monkeypatch.setattr(fft, 'FFT_CHUNK', 2)  # a batch of 5: two chunks of 2 and a remainder of 1
  x = jax.random.normal(jax.random.key(0), (5, 9, 11, 3))
  w = jax.random.normal(jax.random.key(1), (3, 4, 3, 6))
  dn = lax.conv_dimension_numbers(x.shape, w.shape, ('NHWC', 'HWIO', 'NHWC'))
  jaxpr = str(jax.make_jaxpr(lambda x, w: fft.conv_fft(x, w, (1, 1), 'SAME', dimension_numbers=dn))(x, w))
  assert 'scan' in jaxpr
  y_ref, vjp_ref = jax.vjp(lambda x, w: lax.conv_general_dilated(x, w, (1, 1), 'SAME', dimension_numbers=dn), x, w)
  y, vjp = jax.vjp(lambda x, w: fft.conv_fft(x, w, (1, 1), 'SAME', dimension_numbers=dn), x, w)
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-4)
  cotangent = jax.random.normal(jax.random.key(2), y.shape)
  for got, want in zip(vjp(cotangent), vjp_ref(cotangent)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_conv_fft_keeps_a_bfloat16_dtype_and_rejects_what_it_cannot_do():
  x, w = jnp.ones((1, 6, 6, 2), jnp.bfloat16), jnp.ones((3, 3, 2, 4), jnp.bfloat16)
  y = fft.conv_fft(x, w, (1, 1), 'VALID')
  assert y.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(y, np.float32), 18.0)  # 3 x 3 x 2 ones
  with pytest.raises(ValueError, match='strides'):
    fft.conv_fft(x, w, (2, 1), 'VALID')
  with pytest.raises(ValueError, match='dilation'):
    fft.conv_fft(x, w, (1, 1), 'VALID', rhs_dilation=(2, 2))
  with pytest.raises(ValueError, match='does not fit'):
    fft.conv_fft(x, jnp.ones((7, 3, 2, 4)), (1, 1), 'VALID')
  with pytest.raises(ValueError, match='folds a 3D'):
    fold2d.conv_fold2d(x, w, (1, 1), 'VALID')
  with pytest.raises(ValueError, match='strides'):
    fold2d.conv_fold2d(jnp.ones((1, 4, 4, 4, 2)), jnp.ones((3, 3, 3, 2, 4)), (1, 2, 1), 'VALID')


def test_fft_sizes_are_the_next_5_smooth_numbers():
  assert [fft._fft_size(n) for n in (1, 7, 11, 16, 212, 316)] == [1, 8, 12, 16, 216, 320]


@pytest.mark.parametrize('shape,window,strides', [
    ((2, 11, 15, 3), (2, 2), (2, 2)),  # the audio pools, odd sizes: floor mode drops the last row/column
    ((2, 4, 13, 10, 3), (1, 3, 3), (1, 2, 2)),  # the video pools: overlapping windows
])
def test_slices_max_pool_matches_nn_max_pool_values_and_gradients(shape, window, strides):
  x = jax.random.normal(jax.random.key(0), shape)

  def loss(x, impl):  # after a ReLU, whose zeros tie: the hardest case (the models pool before theirs)
    return jnp.sum(jnp.sin(kernels.max_pool(nn.relu(x), window, strides, impl)))

  y, y_ref = (kernels.max_pool(x, window, strides, impl) for impl in ('slices', 'xla'))
  assert y.shape == y_ref.shape
  np.testing.assert_array_equal(y, y_ref)
  np.testing.assert_allclose(jax.grad(loss)(x, 'slices'), jax.grad(loss)(x, 'xla'), rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match='max-pool impl'):
    kernels.max_pool(x, window, strides, 'fft')


def test_fast_is_the_untuned_cpu_plan_and_anything_else_applies_to_every_layer(monkeypatch):
  monkeypatch.setattr(native, 'available', lambda: True)
  fastest = kernels.resolve('fast', 'fast', backend='cpu')
  assert (fastest.audio, fastest.video) == tuple(plans[0] for plans in kernels.CPU_PLANS.values())
  assert fastest.pool == 'native'
  on_tpu = kernels.resolve('fast', 'fast', backend='tpu')  # the plan is a CPU measurement
  assert set(on_tpu.audio + on_tpu.video) == {'xla'} and on_tpu.pool == 'slices'
  every = kernels.resolve('fold2d+patches:2', 'xla', backend='cpu')
  assert every.video == ('fold2d+patches:2',) * 4 and every.audio == ('fold2d+patches:2',) * 3
  assert every.pool == 'xla'
  with pytest.raises(ValueError, match="'fast'"):
    kernels.resolve('winograd', 'fast')
  with pytest.raises(ValueError, match='max-pool impl'):
    kernels.resolve('fast', 'average')
  kernels.check('fast', 'fast')  # the same checks, without asking for a backend
  kernels.check('fold2d+patches:2', 'slices')
  with pytest.raises(ValueError, match="'fast'"):
    kernels.check('winograd', 'fast')
  with pytest.raises(ValueError, match='max-pool impl'):
    kernels.check('xla', 'average')
  default = kernels.Plan()  # what a module built without get_model computes: the plain Flax layers
  assert set(default.audio + default.video) == {'xla'} and default.pool == 'xla'
  assert len(default.audio) == 3 and len(default.video) == 4


def test_split_takes_the_output_and_input_gradient_from_one_impl_and_the_kernel_gradient_from_the_other():
  def doubled(*args, **kwargs):  # the same convolution, twice: tells whose gradient arrives
    return 2 * lax.conv_general_dilated(*args, **kwargs)

  x, w = jax.random.normal(jax.random.key(0), (2, 6, 7, 3)), jax.random.normal(jax.random.key(1), (3, 3, 3, 4))
  dn = lax.conv_dimension_numbers(x.shape, w.shape, ('NHWC', 'HWIO', 'NHWC'))

  def loss(conv):
    return jax.value_and_grad(lambda x, w: jnp.sum(jnp.sin(conv(x, w, (1, 1), 'SAME', dimension_numbers=dn))),
                              argnums=(0, 1))(x, w)

  plain, (gx, gw) = loss(lax.conv_general_dilated)
  value, (split_gx, split_gw) = loss(split.conv_split(lax.conv_general_dilated,
                                                      split.autodiff_kernel_gradient(doubled)))
  np.testing.assert_allclose(value, plain, rtol=1e-6)
  np.testing.assert_allclose(split_gx, gx, rtol=1e-6)
  np.testing.assert_allclose(split_gw, 2 * gw, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('impl', kernels.POOL_IMPLS)
def test_pooling_before_the_relu_gives_the_values_and_gradients_of_relu_then_pool(impl):
  # The models pool first (less work for the ReLU); the paper's order is ReLU, then pool.
  x = jax.random.normal(jax.random.key(0), (2, 4, 9, 11, 3))
  window, strides = (1, 3, 3), (1, 2, 2)

  def paper(x):
    return jnp.sum(jnp.sin(kernels.max_pool(jax.nn.relu(x), window, strides, impl)))

  def ours(x):
    return jnp.sum(jnp.sin(jax.nn.relu(kernels.max_pool(x, window, strides, impl))))

  np.testing.assert_allclose(ours(x), paper(x), rtol=1e-6)
  np.testing.assert_allclose(jax.grad(ours)(x), jax.grad(paper)(x), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize('shape,window,padding,strides,dilation,fold', [
    ((2, 9, 11, 3), (3, 4), 'SAME', (1, 1), (1, 1), 1),
    ((2, 9, 11, 3), (3, 4), ((2, 1), (0, 3)), (2, 3), (1, 2), 2),
    ((2, 9, 11, 3), (3, 4), 'VALID', (1, 1), (2, 1), 0),
    ((2, 5, 6, 7, 4), (3, 2, 3), ((1, 1), (0, 1), (2, 0)), (1, 1, 1), (1, 1, 1), 2),
    ((2, 5, 6, 7, 4), (3, 3, 3), 'VALID', (1, 2, 1), (1, 1, 1), 3),
])
def test_written_out_patches_kernel_gradient_equals_autodiffs(shape, window, padding, strides, dilation, fold,
                                                              monkeypatch):
  x = jax.random.normal(jax.random.key(0), shape)
  w = jax.random.normal(jax.random.key(1), (*window, shape[-1], 5))
  spatial = 'DHW'[3 - len(window):]
  dn = lax.conv_dimension_numbers(x.shape, w.shape, (f'N{spatial}C', f'{spatial}IO', f'N{spatial}C'))
  args = (strides, padding)
  kwargs = {'rhs_dilation': dilation, 'dimension_numbers': dn}
  y, vjp = jax.vjp(lambda w: lax.conv_general_dilated(x, w, *args, **kwargs, precision=lax.Precision.HIGHEST), w)
  dy = jax.random.normal(jax.random.key(2), y.shape)
  want = vjp(dy)[0]
  got = patches.patches_kernel_gradient(x, w, dy, *args, **kwargs, fold=fold)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  monkeypatch.setattr(patches, 'MAX_IM2COL_BYTES', 1)  # one chunk per batch row, summed
  np.testing.assert_allclose(patches.patches_kernel_gradient(x, w, dy, *args, **kwargs, fold=fold), want,
                             rtol=1e-4, atol=1e-4)
