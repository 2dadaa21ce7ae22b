"""The config schema: every invalid value of every field is refused before any work, naming the field; the rules
across fields; the one rule for result-neutral fields shared by resume and sweeps; and upgrade of old configs."""
import json
import math
import os
import subprocess
import sys

import pytest

from emojax import schema, sweeps, workdirs
from experiments.configs import cnn, common, emodb, fusion

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# At least one invalid value, of the field's own type (what a --config.x=value flag can carry), for every field of
# experiments/configs/common.py that has one (a bool, a path or a list of names has none).
INVALID = {
    'seed': [-1],
    'freeze_steps': [-1],
    'objective': ['bogus'],
    'contrastive.margin': [0.0, -1.0, math.nan],
    'contrastive.hard_fraction': [1.5, -0.1],
    'contrastive.negatives': ['some'],
    'contrastive.loss': ['triplet'],
    'contrastive.temperature': [0.0, math.inf],
    'corpus.name': ['voxceleb'],
    'corpus.iemocap_audio_source': ['video'],
    'corpus.synthetic.num_speakers': [1],
    'corpus.synthetic.utterances_per_emotion': [0],
    'corpus.synthetic.seconds': [0.1, math.nan],
    'corpus.synthetic.frame_size': [(48,), (0, 64)],
    'corpus.synthetic.seed': [-3],
    'data.variant': ['ds5'],
    'data.frontend': ['mfcc'],
    'data.audio_size': [(64,), (0, 96), (64, 96, 1)],
    'data.mel_bands': [4, 512],
    'data.clip_seconds': [0.0, -1.0, math.inf],
    'data.class_set': ['5class'],
    'data.video_frames': [0],
    'data.video_size': [(60,)],
    'data.video_crop': ['centre'],
    'data.split': ['bogus'],
    'data.num_test_speakers': [-1],
    'data.num_val_speakers': [-1],
    'data.fold': [-1],
    'data.num_folds': [-2],
    'data.test_fraction': [0.0, 1.0, math.nan],
    'data.normalize': ['global'],
    'data.crop_frames': [-1],
    'data.test_crops': [0],
    'data.functionals': ['opensmile'],
    'data.balance_per_class': [-1],
    'data.num_workers': [-1],
    'data.augment_copies': [-1],
    'data.augment_level_db': [5.0, math.nan],
    'data.augment.top_crop_px': [-1],
    'data.augment.rotate_degrees': [-5.0, 200.0],
    'data.augment.freq_masks': [-1],
    'data.augment.time_masks': [-1],
    'data.augment.mask_width': [-1],
    'data.augment.freq_warp': [0.7, -0.1],
    'model.name': ['resnet'],
    'model.width': [0.0, -0.5, math.nan],
    'model.dropout': [1.0, -0.1],
    'model.rnn_dropout': [1.0],
    'model.rnn_hidden': [0],
    'model.rnn_layers': [0],
    'model.embed_dim': [0],
    'model.pooling': ['bogus'],
    'model.rnn_unroll': [0],
    'model.audio_model': ['video3d'],
    'model.visual': ['faces'],
    'model.visual_hidden': [0],
    'model.dtype': ['float16'],
    'model.conv_impl': ['cudnn'],
    'model.pool_impl': ['cudnn'],
    'optim.learning_rate': [0.0, -0.1, math.inf, math.nan],
    'optim.weight_decay': [-0.01, math.nan],
    'optim.l1': [-1.0],
    'optim.max_grad_norm': [-1.0],
    'optim.label_smoothing': [1.0, math.nan],
    'optim.schedule': ['bogus'],
    'optim.warmup_epochs': [-1.0],
    'train.batch_size': [0],
    'train.num_epochs': [0],
    'train.checkpoint_every_steps': [-1],
    'train.keep_checkpoints': [0],
    'train.log_every_steps': [0],
    'train.mixup_alpha': [-0.2, math.inf],
    'train.max_bad_steps': [0],
    'train.early_stopping_patience': [-1],
}
NO_INVALID_VALUE = {'workdir', 'init_from', 'init_keys', 'eval_only', 'allow_changes', 'contrastive.normalize',
                    'contrastive.center', 'contrastive.super_hard_same_speaker', 'corpus.root',
                    'corpus.ravdess_keep_song', 'corpus.visual_features', 'data.data_dir', 'data.merge_exc', 'data.test_speakers', 'model.pretrained',
                    'model.batchnorm', 'model.time_scan'}


def _set(config, field, value):
  *path, leaf = field.split('.')
  section = config
  for part in path:
    section = section[part]
  section[leaf] = value


def test_every_field_of_the_base_config_has_a_rule_and_every_rule_an_invalid_value_here():
  fields = set(schema.flatten(common.base_config('fusion', None)))
  assert fields == set(schema.FIELDS)
  assert set(INVALID) | NO_INVALID_VALUE == fields and not set(INVALID) & NO_INVALID_VALUE


@pytest.mark.parametrize('field,value', [(f, v) for f, values in INVALID.items() for v in values])
def test_an_invalid_value_is_refused_naming_its_field(field, value):
  config = fusion.get_config('smoke')
  schema.validate(config)  # valid as it is
  _set(config, field, value)
  with pytest.raises(schema.InvalidConfig, match=f'{field.replace(".", "[.]")} must be'):
    schema.validate(config)


@pytest.mark.parametrize('configs', [cnn.get_config, fusion.get_config])
def test_every_shipped_config_and_preset_is_valid(configs):
  for arg in (None, 'smoke', 'paper'):
    schema.validate(configs(arg))
  for arg in ('cnn', 'cnn_lstm', 'ravdess,spectrogram', 'smoke'):
    config = emodb.get_config(arg)
    config.corpus.root = ROOT  # any folder: the rule asks for an existing, non-empty one
    schema.validate(config)


@pytest.mark.parametrize('field,value,message', [
    ('model.pooling', 'stats', "model.pooling is not read by model 'cnn'"),
    ('model.rnn_hidden', 16, "model.rnn_hidden is not read by model 'cnn'"),
    ('model.audio_model', 'cnn', "model.audio_model is not read by model 'cnn'"),
    ('data.functionals', 'egemaps', 'empty for the clip variant'),
    ('data.crop_frames', 1000, 'data.crop_frames must be at most the spectrogram width'),
    ('objective', 'contrastive', "model.name must be 'fusion'"),
    ('freeze_steps', 10, 'need init_from'),
    ('init_keys', ('convs',), 'need init_from'),
    ('corpus.name', 'emodb', 'corpus.root must name the folder'),
])
def test_fields_valid_alone_but_not_together_are_refused(field, value, message):
  config = cnn.get_config('smoke')
  _set(config, field, value)
  with pytest.raises(schema.InvalidConfig, match=message):
    schema.validate(config)


def test_fusion_reads_the_recurrent_fields_of_its_audio_branch_and_video3d_no_spectrogram_augmentation(tmp_path):
  config = fusion.get_config('smoke')
  config.model.pooling = 'stats'  # reaches fusion's recurrent audio encoder
  schema.validate(config)
  config.model.audio_model = 'cnn'  # a CNN branch reads no recurrent field
  with pytest.raises(schema.InvalidConfig, match="model.pooling is not read by model 'fusion'"):
    schema.validate(config)
  video = common.base_config('video3d', 'smoke')
  video.data.augment.freq_masks = 2
  with pytest.raises(schema.InvalidConfig, match="which model 'video3d' does not read"):
    schema.validate(video)
  missing = common.base_config('cnn', 'smoke')
  missing.corpus.name, missing.corpus.root = 'ravdess', str(tmp_path / 'nowhere')
  with pytest.raises(schema.InvalidConfig, match='is not a folder'):
    schema.validate(missing)


def test_unknown_and_missing_fields_are_refused():
  config = cnn.get_config('smoke')
  config.unlock()
  config.data.speed = 2
  del config.optim['l1']
  with pytest.raises(schema.InvalidConfig, match='unknown field data.speed; missing field optim.l1'):
    schema.validate(config)


def test_one_rule_for_result_neutral_fields_in_resume_and_sweeps(tmp_path):
  recorded = schema.flatten(cnn.get_config('smoke'))
  for field in schema.RESULT_NEUTRAL:
    if field in recorded:
      changed = {**recorded, field: 'elsewhere' if isinstance(recorded[field], str) else 99}
      assert schema.result_changes(recorded, changed) == []
  assert schema.result_changes(recorded, {**recorded, 'train.num_epochs': 5}) == []  # more epochs extend
  assert schema.result_changes(recorded, {**recorded, 'train.num_epochs': 1}) == ['train.num_epochs']
  assert schema.result_changes(recorded, {**recorded, 'optim.learning_rate': 0.1}) == ['optim.learning_rate']

  # The sweep compares a point's workdir by the same rule as a resumed run: the array cache moved (a field the
  # sweep ignored before and a resume refused) is accepted by both; a changed learning rate by neither.
  path = tmp_path / 'mysweep.py'
  path.write_text('from emojax import sweeps\nfrom experiments.configs import common\n'
                  'def get_config(arg=None):\n  return common.base_config("cnn", "smoke")\n'
                  'def get_sweep(arg=None):\n  return sweeps.seeds(1)\n')
  sweep = sweeps.load(str(path), str(path), workdir=str(tmp_path / 'sweep'))
  point_dir = sweep.point_dir(sweep.points[0])
  os.makedirs(point_dir)
  moved = sweep.configs[0].copy_and_resolve_references()
  moved.data.data_dir = '/elsewhere'
  workdirs.write_config(point_dir, moved)
  assert sweeps.stale_points(sweep) == [] and workdirs.check_config(point_dir, sweep.configs[0]) == [
      "data.data_dir: '/elsewhere' -> 'data'"]
  moved.optim.learning_rate = 0.1
  workdirs.write_config(point_dir, moved)
  assert 'optim.learning_rate' in sweeps.stale_points(sweep)[0]
  with pytest.raises(workdirs.ConfigChanged, match='optim.learning_rate'):
    workdirs.check_config(point_dir, sweep.configs[0])


def test_a_config_saved_by_an_older_version_is_upgraded_to_what_it_meant(tmp_path):
  saved = json.loads(cnn.get_config('smoke').to_json())
  for field in schema.ADDED:
    *path, leaf = field.split('.')
    section = saved
    for part in path:
      section = section[part]
    del section[leaf]
  upgraded = schema.upgrade(saved)
  schema.validate(upgraded)
  assert schema.flatten(upgraded) == schema.flatten(json.loads(cnn.get_config('smoke').to_json()))
  workdir = tmp_path / 'w'
  workdir.mkdir()
  (workdir / 'config.json').write_text(json.dumps(saved))
  assert workdirs.check_config(str(workdir), cnn.get_config('smoke')) == []  # the old run resumes as it was


@pytest.mark.e2e
@pytest.mark.parametrize('command,flag,field', [
    ('run', '--config.optim.schedule=bogus', 'optim.schedule'),
    ('run', '--config.data.split=bogus', 'data.split'),
    ('run', '--config.model.pooling=bogus', 'model.pooling'),
    ('run', '--config.objective=bogus', 'objective'),
    ('run', '--config.optim.label_smoothing=nan', 'optim.label_smoothing'),
    ('run', '--config.eval_only=True --config.optim.learning_rate=inf', 'optim.learning_rate'),
    ('prepare', '--config.data.variant=ds9', 'data.variant'),
])
def test_the_commands_exit_2_with_one_error_line_before_writing_anything(tmp_path, command, flag, field):
  workdir, data_dir = tmp_path / 'w', tmp_path / 'arrays'
  where = [f'--workdir={workdir}'] if command == 'run' else []
  done = subprocess.run([sys.executable, '-m', f'experiments.{command}', '--config=configs/cnn_rnn.py:smoke', *where,
                         f'--config.data.data_dir={data_dir}', *flag.split()],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert done.returncode == 2, done.stderr[-2000:]
  errors = [line for line in done.stderr.splitlines() if line.startswith('Error:')]
  assert len(errors) == 1 and f'{field} must be' in errors[0] and 'Traceback' not in done.stderr
  assert not os.path.exists(workdir) and not os.path.exists(data_dir)


@pytest.mark.e2e
def test_a_sweep_with_an_invalid_point_stops_before_any_run(tmp_path):
  path = tmp_path / 'bad.py'
  path.write_text('from emojax import sweeps\nfrom experiments.configs import common\n'
                  'def get_config(arg=None):\n  return common.base_config("cnn_rnn", "smoke")\n'
                  "def get_sweep(arg=None):\n  return sweeps.values('model.pooling', ['last', 'bogus'])\n")
  done = subprocess.run([sys.executable, '-m', 'experiments.sweep', f'--config={path}',
                         f'--workdir={tmp_path / "sweep"}'], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert done.returncode == 2 and 'model.pooling must be one of' in done.stderr and 'Traceback' not in done.stderr
  assert not os.path.exists(tmp_path / 'sweep')
