import collections
import json

import pytest

from emojax import splits


def _examples():
  rows = []
  for speaker, group in (('a', 'g1'), ('b', 'g1'), ('c', 'g2'), ('d', 'g3')):
    for utt in range(5):
      for clip in range(2):
        rows.append({'utterance': f'{speaker}{utt}', 'speaker': speaker, 'group': group,
                     'label': utt % 3, 'clip': clip})
  return rows


def test_speaker_split_holds_out_whole_speakers_and_sibling_clips():
  ex = _examples()
  split = splits.make_split(ex, 'speaker', test_speakers=('c',))
  assert {ex[i]['speaker'] for i in split['test']} == {'c'}
  assert 'c' not in {ex[i]['speaker'] for i in split['train']}
  train_utts = {ex[i]['utterance'] for i in split['train']}
  assert not train_utts & {ex[i]['utterance'] for i in split['test']}
  assert sorted(split['train'] + split['test']) == list(range(len(ex)))


def test_seeded_speaker_choice_is_repeatable():
  ex = _examples()
  assert splits.make_split(ex, 'speaker', num_test_speakers=2, seed=3) == \
      splits.make_split(ex, 'speaker', num_test_speakers=2, seed=3)


def test_group_fold_and_random_split():
  ex = _examples()
  fold = splits.make_split(ex, 'group', fold=0)
  assert {ex[i]['group'] for i in fold['test']} == {'g1'} and fold['test_units'] == ['g1']
  rand = splits.make_split(ex, 'random', test_fraction=0.25, seed=0)
  assert len(rand['test']) == 10 and len(rand['train']) == 30


def test_split_errors_are_clear():
  ex = _examples()
  with pytest.raises(ValueError, match='not in the data'):
    splits.make_split(ex, 'speaker', test_speakers=('zz',))
  with pytest.raises(ValueError, match='Fold 7 out of range'):
    splits.make_split(ex, 'group', fold=7)
  with pytest.raises(ValueError, match='Unknown split scheme'):
    splits.make_split(ex, 'by-moon')


def test_balance_duplicates_small_and_undersamples_large_classes():
  labels = [0] * 10 + [1] * 3 + [2] * 6
  balanced = splits.balance(range(len(labels)), labels, per_class=5, seed=0)
  counts = collections.Counter(labels[i] for i in balanced)
  assert counts == {0: 5, 1: 5, 2: 5}
  assert len(set(i for i in balanced if labels[i] == 0)) == 5  # undersampled without repeats
  assert set(i for i in balanced if labels[i] == 1) == {10, 11, 12}  # every small-class example kept


def test_split_examples_keeps_augmented_copies_with_their_trained_original():
  ex = [{**e, 'copy': copy} for e in _examples() for copy in range(3)]
  originals = [i for i, e in enumerate(ex) if e['copy'] == 0]
  for scheme, options in (('speaker', {'test_speakers': ('c',)}), ('group', {'fold': 1}), ('random', {'seed': 2})):
    split = splits.split_examples(ex, scheme, **options)
    plain = splits.make_split([ex[i] for i in originals], scheme, **options)
    assert split['test'] == [originals[i] for i in plain['test']]  # held out: originals only
    trained = {(ex[originals[i]]['utterance'], ex[originals[i]]['clip']) for i in plain['train']}
    assert split['train'] == sorted(i for i, e in enumerate(ex) if (e['utterance'], e['clip']) in trained)
    assert split['test_units'] == plain['test_units']


def test_validation_speakers_come_from_the_training_side_and_are_written_out(tmp_path):
  ex = [{'speaker': s, 'group': s, 'utterance': f'{s}{i}', 'label': i % 2} for s in 'abcdef' for i in range(3)]
  split = splits.make_split(ex, 'speaker', test_speakers=('a', 'b'), num_val_speakers=2, seed=4)
  speakers = {side: {ex[i]['speaker'] for i in split[side]} for side in ('train', 'validation', 'test')}
  assert speakers['test'] == {'a', 'b'} and len(speakers['validation']) == 2 and len(speakers['train']) == 2
  assert not (speakers['validation'] & speakers['test']) and not (speakers['validation'] & speakers['train'])
  assert sorted(speakers['validation']) == split['validation_units']
  assert sorted(split['train'] + split['validation'] + split['test']) == list(range(len(ex)))
  assert split == splits.make_split(ex, 'speaker', test_speakers=('a', 'b'), num_val_speakers=2, seed=4)
  assert splits.make_split(ex, 'speaker', test_speakers=('a', 'b'))['validation'] == []
  fold = splits.make_split(ex, 'group', fold=0, num_val_speakers=1, seed=0)
  assert len({ex[i]['speaker'] for i in fold['validation']}) == 1 and 'a' not in fold['validation_units']
  path = tmp_path / 'split.json'
  splits.write(split, str(path), ex)
  written = json.loads(path.read_text())
  assert written['validation_utterances'] == sorted(ex[i]['utterance'] for i in split['validation'])


def test_no_speaker_left_for_validation_is_an_error_naming_the_field():
  ex = [{'speaker': s, 'group': s, 'label': 0} for s in 'abc']
  with pytest.raises(ValueError, match='num_val_speakers'):
    splits.make_split(ex, 'speaker', test_speakers=('a',), num_val_speakers=2)
  with pytest.raises(ValueError, match='>= 0'):
    splits.make_split(ex, 'speaker', test_speakers=('a',), num_val_speakers=-1)


def test_speaker_folds_leave_one_out_and_k_folds_cover_every_speaker_once():
  speakers = [f'{i:02d}' for i in range(1, 11)] * 3
  loso = splits.speaker_folds(speakers)
  assert loso == [[f'{i:02d}'] for i in range(1, 11)]
  five = splits.speaker_folds(speakers, 5)
  assert five[0] == ['01', '06'] and five[1] == ['02', '07']  # round-robin: odd and even ids mix
  assert sorted(s for fold in five for s in fold) == sorted(set(speakers))
  with pytest.raises(ValueError, match='Cannot make 11 speaker folds from 10 speakers'):
    splits.speaker_folds(speakers, 11)
  with pytest.raises(ValueError, match='Cannot make 1 speaker folds'):
    splits.speaker_folds(speakers, 1)


def test_folds_split_is_three_way_and_speaker_disjoint():
  ex = _examples()
  seen_test = []
  for fold in range(4):
    split = splits.make_split(ex, 'folds', fold=fold, num_val_speakers=1, seed=0)
    sides = {side: {ex[i]['speaker'] for i in split[side]} for side in ('train', 'validation', 'test')}
    assert len(sides['test']) == 1 and len(sides['validation']) == 1 and len(sides['train']) == 2
    assert not (sides['train'] & sides['test'] or sides['train'] & sides['validation']
                or sides['validation'] & sides['test'])
    assert split['test_units'] == sorted(sides['test']) and split['validation_units'] == sorted(sides['validation'])
    assert sorted(split['train'] + split['validation'] + split['test']) == list(range(len(ex)))
    seen_test += split['test_units']
  assert sorted(seen_test) == ['a', 'b', 'c', 'd']  # every speaker is tested exactly once
  two = splits.make_split(ex, 'folds', fold=1, num_folds=2)
  assert two['test_units'] == ['b', 'd']


def test_folds_errors_name_the_problem_before_training():
  ex = _examples()
  with pytest.raises(ValueError, match=r'Fold 4 out of range: there are 4 speaker folds \(0..3\)'):
    splits.make_split(ex, 'folds', fold=4)
  with pytest.raises(ValueError, match='Cannot take 3 validation speaker'):
    splits.make_split(ex, 'folds', fold=0, num_val_speakers=3)
