"""Data parallelism: the sharded step on 8 (forced) CPU devices equals the single-device step."""
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent('''
    import flax.linen as nn, jax, jax.numpy as jnp, numpy as np, optax
    from emojax import train
    assert jax.device_count() == 8, jax.devices()

    class Net(nn.Module):
      @nn.compact
      def __call__(self, inputs, *, train):
        x = nn.Conv(4, (3, 3))(inputs['audio'])
        x = nn.BatchNorm(use_running_average=not train)(x)
        x = nn.Dropout(0.2, deterministic=not train)(nn.relu(x)).mean(axis=(1, 2))
        return nn.Dense(3)(x)

    rng = np.random.default_rng(0)
    batch = {'audio': rng.normal(size=(16, 8, 6, 1)).astype(np.float32), 'label': rng.integers(0, 3, 16)}
    # Plain SGD: Adam's first steps divide by |g|, which turns rounding-level differences in
    # near-zero gradients (reduction order differs across devices) into +-lr jumps.
    fresh = lambda: train.create_state(Net(), batch, optax.sgd(0.1), jax.random.key(0))
    step = train.make_train_step()

    single = jax.device_put(fresh(), jax.devices()[0])
    for i in range(3):
      single, _ = step(single, jax.device_put(batch, jax.devices()[0]), jax.random.key(i))

    mesh = train.data_mesh()
    sharded = train.replicate(fresh(), mesh)
    for i in range(3):
      global_batch = train.shard_batch(batch, mesh)
      assert len(global_batch['audio'].sharding.device_set) == 8
      sharded, _ = step(sharded, global_batch, jax.random.key(i))
    assert len(sharded.params['Dense_0']['kernel'].sharding.device_set) == 8  # replicated

    for a, b in zip(jax.tree_util.tree_leaves(jax.device_get(single)), jax.tree_util.tree_leaves(jax.device_get(sharded))):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    print('SHARDED_EQUALS_SINGLE')
''')

# The paper's fusion model (tiny), one SGD step sharded over 8 devices against one device, in its XLA-only
# fast CPU layers (FFT, folded and im2col convolutions, slice max-pools; argument 'xla') or in the native C++
# kernels ('native'), under the mesh in context as training runs it: there each device runs the custom
# calls on its own examples (batch 1 of 8) and the kernel gradients are summed.
FUSION_SCRIPT = textwrap.dedent('''
    import re, sys
    import jax, numpy as np, optax
    from emojax import kernels, models, train
    assert jax.device_count() == 8, jax.devices()
    native = sys.argv[1] == 'native'
    model = models.get_model('fusion', num_classes=4, width=0.25, rnn_hidden=8, dropout=0.0, rnn_dropout=0.0)
    model = model.clone(plan=kernels.Plan(audio=('native',) * 3, video=('native',) * 4, pool='native') if native else
                        kernels.Plan(audio=kernels.CPU_PLANS['audio'][1], video=kernels.CPU_PLANS['video'][1],
                                     pool='slices'))
    rng = np.random.default_rng(0)
    batch = {'audio': rng.normal(size=(8, 32, 48, 3)).astype(np.float32),
             'video': rng.normal(size=(8, 9, 48, 64, 3)).astype(np.float32), 'label': rng.integers(0, 4, 8)}
    fresh = lambda: train.create_state(model, batch, optax.sgd(0.1), jax.random.key(0))
    step = train.make_train_step()
    single, _ = step(jax.device_put(fresh(), jax.devices()[0]), jax.device_put(batch, jax.devices()[0]),
                     jax.random.key(1))
    mesh = train.data_mesh()
    with jax.set_mesh(mesh):
      state, device_batch = train.replicate(fresh(), mesh), train.shard_batch(batch, mesh)
      hlo = step.lower(state, device_batch, jax.random.key(1)).compile().as_text()
      sharded, _ = step(state, device_batch, jax.random.key(1))
    batches = {int(shape.split(',')[0]) for shape in
               re.findall(r'f32\\[([0-9,]+)\\][^\\n]*custom_call_target="emojax_conv3d_forward"', hlo)}
    assert batches == ({1} if native else set()), batches  # per device: 8 examples over 8 devices
    moved = 0
    for a, b, c in zip(*(jax.tree_util.tree_leaves(jax.device_get(t.params)) for t in (single, sharded, fresh()))):
      np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
      moved += int(not np.allclose(a, c))
    assert moved > 0.9 * len(jax.tree_util.tree_leaves(single.params)), moved  # the step changed the parameters
    print('SHARDED_EQUALS_SINGLE')
''')


@pytest.mark.parametrize('script,argument', [(SCRIPT, ''), (FUSION_SCRIPT, 'xla'), (FUSION_SCRIPT, 'native')],
                         ids=['toy', 'fusion_xla_layers', 'fusion_native_layers'])
def test_sharded_step_equals_single_device_step(script, argument):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8', JAX_PLATFORMS='cpu')
  result = subprocess.run([sys.executable, '-c', script, argument], env=env, capture_output=True, text=True,
                          timeout=600,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'SHARDED_EQUALS_SINGLE' in result.stdout
