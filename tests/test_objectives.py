"""Loss maths on hand-computed cases."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emojax import objectives


def test_cross_entropy_matches_hand_computation():
  logits = jnp.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
  labels = jnp.array([0, 2])
  first = -math.log(math.exp(2) / (math.exp(2) + 2))
  second = -math.log(1 / 3)
  assert float(objectives.cross_entropy(logits, labels)) == pytest.approx((first + second) / 2, rel=1e-6)


def test_l1_penalty_counts_kernels_only():
  params = {'dense': {'kernel': jnp.array([[1.0, -2.0]]), 'bias': jnp.array([100.0])},
            'conv': {'kernel': jnp.array([-0.5])}}
  assert float(objectives.l1_penalty(params)) == pytest.approx(3.5)


def test_pair_distance_is_euclidean():
  a = jnp.array([[0.0, 0.0], [1.0, 1.0]])
  v = jnp.array([[3.0, 4.0], [1.0, 1.0]])
  np.testing.assert_allclose(objectives.pair_distance(a, v), [5.0, 0.0], atol=1e-5)


def test_contrastive_hand_computed_including_hinge_zero_region():
  d = jnp.array([0.5, 0.3, 1.5, 2.0])
  y = jnp.array([1, 0, 0, 0])
  margin = 1.0
  # positive: 0.25; negative inside margin: (1-0.3)^2 = 0.49; negatives beyond margin: 0.
  expected = (0.25 + 0.49 + 0 + 0) / 4
  assert float(objectives.contrastive(d, y, margin)) == pytest.approx(expected, rel=1e-6)


def test_contrastive_is_not_the_authors_clamp_bug():
  # With max=0 instead of min=0 a far negative would cost (margin - d)^2 > 0; the formula says 0.
  assert float(objectives.contrastive(jnp.array([3.0]), jnp.array([0]), 1.0)) == 0.0


def test_contrastive_gradients_pull_positives_and_push_close_negatives():
  d = jnp.array([0.5, 0.3, 1.5])
  y = jnp.array([1, 0, 0])
  grad = jax.grad(lambda d: objectives.contrastive(d, y, 1.0))(d)
  assert grad[0] > 0  # descending the loss shrinks the positive distance
  assert grad[1] < 0  # and grows the negative one inside the margin
  assert grad[2] == 0  # a negative beyond the margin is left alone


def test_contrastive_weights_mask_pairs_and_empty_mask_is_finite():
  d = jnp.array([0.5, 0.3])
  y = jnp.array([1, 0])
  assert float(objectives.contrastive(d, y, 1.0, weight=jnp.array([1, 0]))) == pytest.approx(0.25)
  empty = objectives.contrastive(d, y, 1.0, weight=jnp.zeros(2))
  assert float(empty) == 0.0
  grad = jax.grad(lambda e: objectives.contrastive(objectives.pair_distance(e, e), y, 1.0))(jnp.ones((2, 3)))
  assert bool(jnp.all(jnp.isfinite(grad)))  # identical embeddings: d = 0 keeps a finite gradient


def test_mining_picks_partners_by_label():
  labels = jnp.array([0, 0, 1, 1, 2, 2, 3, 3])
  pairs = objectives.mine_pairs(labels, jax.random.key(0), hard_fraction=0.75)
  partner, hard, valid = (np.asarray(pairs[k]) for k in ('partner', 'hard', 'valid'))
  assert hard.sum() == 6 and valid.all()
  assert (partner != np.arange(8)).all()  # never the clip itself
  lab = np.asarray(labels)
  assert (lab[partner][hard] != lab[hard]).all()  # hard: a different emotion
  assert (lab[partner][~hard] == lab[~hard]).all()  # super-hard: the same emotion


def test_mining_a_single_emotion_batch_masks_hard_negatives_without_nans():
  labels = jnp.zeros(6, jnp.int32)
  pairs = objectives.mine_pairs(labels, jax.random.key(1), hard_fraction=0.5)
  assert np.array_equal(np.asarray(pairs['valid']), ~np.asarray(pairs['hard']))
  emb_a = jax.random.normal(jax.random.key(2), (6, 4))
  emb_v = jax.random.normal(jax.random.key(3), (6, 4))
  parts = objectives.contrastive_pairs(emb_a, emb_v, pairs, 1.0)
  assert all(np.isfinite(float(v)) for v in parts.values())
  assert float(parts['hard']) == 0.0
  # the same compiled function serves a normal and a degenerate batch (masks, not branches)
  fn = jax.jit(lambda l, k: objectives.mine_pairs(l, k)['partner'])
  fn(labels, jax.random.key(0))
  fn(jnp.arange(6), jax.random.key(0))
  assert fn._cache_size() == 1


def test_contrastive_pairs_hand_computed():
  audio = jnp.array([[0.0, 0.0], [1.0, 0.0]])
  video = jnp.array([[0.0, 0.5], [1.0, 0.0]])
  pairs = {'partner': jnp.array([1, 0]), 'hard': jnp.array([True, True]), 'valid': jnp.array([True, True])}
  parts = objectives.contrastive_pairs(audio, video, pairs, margin=2.0, normalize=False)
  # positives: d = 0.5 and 0 -> 0.25, 0; negatives: d(a0, v1) = 1, d(a1, v0) = sqrt(1.25)
  neg = [(2 - 1.0) ** 2, (2 - math.sqrt(1.25)) ** 2]
  assert float(parts['loss']) == pytest.approx((0.25 + 0 + sum(neg)) / 4, rel=1e-5)
  assert float(parts['positive']) == pytest.approx(0.125, rel=1e-5)
  assert float(parts['hard']) == pytest.approx(sum(neg) / 2, rel=1e-5)


def test_contrastive_gradient_moves_embeddings_the_right_way():
  audio = jnp.array([[0.0, 0.0], [1.0, 0.0]])
  video = jnp.array([[0.0, 0.5], [0.9, 0.0]])
  pairs = {'partner': jnp.array([1, 0]), 'hard': jnp.array([True, True]), 'valid': jnp.array([True, True])}

  def distances(step):
    loss = lambda v: objectives.contrastive_pairs(audio, v, pairs, 2.0, normalize=False)['loss']
    v = video - step * jax.grad(loss)(video)
    pos = objectives.pair_distance(audio, v)
    neg = objectives.pair_distance(audio, v[pairs['partner']])
    return pos, neg

  pos0, neg0 = distances(0.0)
  pos1, neg1 = distances(0.1)
  assert float(pos1.sum()) < float(pos0.sum())
  assert float(neg1.sum()) > float(neg0.sum())


def test_centring_removes_the_shared_offset_before_normalising():
  emb = jnp.array([[10.0, 0.1], [10.0, -0.1]])  # nearly identical rows: a constant offset dominates
  plain = objectives.prepare_embeddings(emb, center=False, normalize=True)
  centred = objectives.prepare_embeddings(emb, center=True, normalize=True)
  assert float(jnp.linalg.norm(plain[0] - plain[1])) < 0.03
  np.testing.assert_allclose(centred, [[0.0, 1.0], [0.0, -1.0]], atol=1e-5)


def test_all_pairs_weights_share_each_type_by_label():
  labels = jnp.array([0, 0, 1, 1, 2, 2, 3, 3])
  pairs = objectives.all_pairs(labels, hard_fraction=0.75)
  weight, hard = np.asarray(pairs['weight']), np.asarray(pairs['hard'])
  lab = np.asarray(labels)
  assert np.all(np.diag(weight) == 0)
  np.testing.assert_array_equal(hard, lab[:, None] != lab[None, :])
  np.testing.assert_allclose((weight * hard).sum(1), 0.75)  # six hard partners, 0.125 each
  np.testing.assert_allclose((weight * ~hard).sum(1), 0.25)  # the one same-emotion partner
  np.testing.assert_allclose(weight[0, 1], 0.25)
  np.testing.assert_allclose(weight[0, 2:], 0.125)


def test_all_pairs_hand_computed():
  audio = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
  video = jnp.array([[0.0, 0.5], [1.0, 0.0], [0.0, 1.0]])
  pairs = objectives.all_pairs(jnp.array([0, 0, 1]), hard_fraction=0.5)
  parts = objectives.contrastive_pairs(audio, video, pairs, margin=2.0, normalize=False)
  hinge = lambda d: max(2.0 - d, 0.0) ** 2
  # Clip 0: super-hard partner 1 (d(a0, v1) = 1), hard partner 2 (d(a0, v2) = 1), half the weight each.
  # Clip 1: super-hard 0 (d(a1, v0) = sqrt(1.25)), hard 2 (sqrt 2). Clip 2: hard 0 and 1 (0.5 and sqrt 2),
  # a quarter each; no super-hard partner.
  negatives = [(0.5, hinge(1.0)), (0.5, hinge(1.0)), (0.5, hinge(math.sqrt(1.25))), (0.5, hinge(math.sqrt(2))),
               (0.25, hinge(0.5)), (0.25, hinge(math.sqrt(2)))]
  positives = [0.25, 0.0, 0.0]
  total_weight = sum(w for w, _ in negatives)
  expected = (sum(positives) + sum(w * l for w, l in negatives)) / (3 + total_weight)
  assert float(parts['loss']) == pytest.approx(expected, rel=1e-5)
  hard = [negatives[i] for i in (1, 3, 4, 5)]
  assert float(parts['hard']) == pytest.approx(sum(w * l for w, l in hard) / sum(w for w, _ in hard), rel=1e-5)
  assert float(parts['super_hard']) == pytest.approx((hinge(1.0) + hinge(math.sqrt(1.25))) / 2, rel=1e-5)


def test_all_pairs_is_the_expectation_of_one_mined_partner_per_clip():
  labels = jnp.array([0, 0, 1, 1, 2, 2, 3, 3])
  audio = jax.random.normal(jax.random.key(4), (8, 5))
  video = jax.random.normal(jax.random.key(5), (8, 5))
  everything = objectives.contrastive_pairs(audio, video, objectives.all_pairs(labels), 1.5)['loss']
  mined = jax.vmap(lambda k: objectives.contrastive_pairs(
      audio, video, objectives.mine_pairs(labels, k), 1.5)['loss'])(jax.random.split(jax.random.key(6), 4000))
  assert float(mined.mean()) == pytest.approx(float(everything), abs=3 * float(mined.std()) / math.sqrt(4000))
  assert float(mined.std()) > 0  # one drawn partner per clip is a noisy estimate of the same loss


def test_all_pairs_on_a_single_emotion_batch_has_no_hard_part_and_stays_finite():
  pairs = objectives.all_pairs(jnp.zeros(5, jnp.int32), hard_fraction=0.75)
  assert not np.asarray(pairs['hard']).any()
  np.testing.assert_allclose(np.asarray(pairs['weight']).sum(1), 0.25)
  emb = jax.random.normal(jax.random.key(7), (2, 5, 4))
  parts = objectives.contrastive_pairs(emb[0], emb[1], pairs, 1.0)
  assert all(np.isfinite(float(v)) for v in parts.values())
  assert float(parts['hard']) == 0.0


def test_super_hard_negatives_can_be_held_to_the_same_speaker():
  labels = jnp.array([0, 0, 0, 1, 1, 1])
  speakers = jnp.array([0, 0, 1, 0, 1, 1])
  pairs = objectives.all_pairs(labels, hard_fraction=0.5, speakers=speakers)
  weight, hard = np.asarray(pairs['weight']), np.asarray(pairs['hard'])
  super_hard = (weight > 0) & ~hard
  # Same emotion AND same speaker: clips 0-1 and 4-5 only; clips 2 and 3 have none.
  assert {tuple(p) for p in np.argwhere(super_hard)} == {(0, 1), (1, 0), (4, 5), (5, 4)}
  np.testing.assert_array_equal(hard, np.asarray(labels)[:, None] != np.asarray(labels)[None, :])
  for key in range(20):
    mined = objectives.mine_pairs(labels, jax.random.key(key), hard_fraction=0.5, speakers=speakers)
    partner, is_hard, valid = (np.asarray(mined[k]) for k in ('partner', 'hard', 'valid'))
    chosen = ~is_hard & valid
    assert (np.asarray(speakers)[partner][chosen] == np.asarray(speakers)[chosen]).all()
    assert (np.asarray(labels)[partner][chosen] == np.asarray(labels)[chosen]).all()
    assert not valid[np.isin(np.arange(6), [2, 3]) & ~is_hard].any()  # no same-speaker partner: masked


def test_info_nce_hand_computed_and_symmetric():
  distance = jnp.array([[0.0, 1.0], [2.0, 0.5]])  # (audio i, video j)
  t = 0.5
  logits = -np.square(np.asarray(distance)) / t
  log_softmax = lambda x, axis: x - np.log(np.exp(x).sum(axis, keepdims=True))
  audio_to_video = -np.diag(log_softmax(logits, 1)).mean()
  video_to_audio = -np.diag(log_softmax(logits, 0)).mean()
  assert float(objectives.info_nce(distance, t)) == pytest.approx((audio_to_video + video_to_audio) / 2, rel=1e-6)
  assert float(objectives.info_nce(distance.T, t)) == pytest.approx(float(objectives.info_nce(distance, t)))


def test_info_nce_pulls_positives_and_pushes_the_closest_negative_hardest():
  audio = jnp.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
  video = jnp.array([[0.0, 0.5], [0.6, 0.0], [3.0, 1.0]])
  pairs = objectives.all_pairs(jnp.array([0, 1, 2]))
  loss = lambda v: objectives.contrastive_pairs(audio, v, pairs, 1.0, normalize=False, loss='infonce',
                                                temperature=1.0)['loss']
  grad = jax.grad(loss)(video)
  moved = video - 0.05 * grad
  before, after = (np.asarray(objectives.pair_distance(audio[:, None], v[None])) for v in (video, moved))
  assert (np.diag(after) < np.diag(before)).all()
  # Video 1 lies 0.6 from audio 0, nearly as close as to its own audio (0.4): it is pushed away...
  assert after[0, 1] > before[0, 1]
  # ...and moves more than video 2, whose other audios lie 2.2 and more away (the softmax weighs them little).
  assert float(jnp.linalg.norm(grad[1])) > float(jnp.linalg.norm(grad[2]))


def test_unknown_contrastive_loss_is_a_clear_error():
  pairs = objectives.all_pairs(jnp.array([0, 1]))
  with pytest.raises(ValueError, match='Unknown contrastive loss'):
    objectives.contrastive_pairs(jnp.ones((2, 3)), jnp.ones((2, 3)), pairs, 1.0, loss='triplet')


def test_label_smoothing_and_mixup_targets_hand_computed():
  logits = jnp.array([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
  labels = jnp.array([0, 2])
  log_p = jax.nn.log_softmax(logits)
  smooth = 0.3 * jnp.ones((2, 3)) / 3 + 0.7 * jax.nn.one_hot(labels, 3)
  expected = -jnp.mean(jnp.sum(smooth * log_p, -1))
  assert float(objectives.cross_entropy(logits, labels, label_smoothing=0.3)) == pytest.approx(float(expected), rel=1e-6)
  # mixup: weight 0.25 on a row's own target, 0.75 on its partner's (rows swapped)
  mix = (jnp.float32(0.25), jnp.array([1, 0]))
  targets = 0.25 * jax.nn.one_hot(labels, 3) + 0.75 * jax.nn.one_hot(labels[::-1], 3)
  expected = -jnp.mean(jnp.sum(targets * log_p, -1))
  assert float(objectives.cross_entropy(logits, labels, mix=mix)) == pytest.approx(float(expected), rel=1e-6)
  x = jnp.arange(6.0).reshape(2, 3)
  np.testing.assert_allclose(objectives.mix_rows(x, mix), 0.25 * x + 0.75 * x[::-1])
  # weight 1 with itself as partner is plain cross-entropy
  plain = objectives.cross_entropy(logits, labels)
  assert float(objectives.cross_entropy(logits, labels, mix=(jnp.float32(1.0), jnp.array([0, 1])))) == \
      pytest.approx(float(plain), rel=1e-6)


def test_mixup_draws_a_weight_in_0_1_and_a_permutation():
  weight, partner = objectives.mixup(jax.random.key(0), 8, 0.2)
  assert 0.0 <= float(weight) <= 1.0
  assert sorted(np.asarray(partner).tolist()) == list(range(8))
