"""Train/test splits over a build's examples, and training-set balancing.

Schemes:
  'speaker'  whole speakers held out (the split the field trusts)
  'group'    leave-one-group-out fold (IEMOCAP session, actor, ...)
  'folds'    cross-validation over speakers: the sorted speakers dealt round-robin into
             `num_folds` folds (0: one per speaker, leave-one-speaker-out); `fold` is held out
  'random'   the paper's random 80/20 over clips: clips of the same utterance and
             speaker land on both sides, so its figures are optimistic
A validation side (`num_val_speakers` > 0) is carved out of the training side by
whole speakers chosen by the seed ('random': clips, as the test side): it picks
the best checkpoint and stops training early, so the test side chooses nothing.
`split_examples` splits a build's examples: augmented copies only ever train.
Every split is written to the workdir as JSON so anyone can reproduce it.
"""
from __future__ import annotations

import collections
from typing import Any, Sequence

import numpy as np

from emojax import files


def speaker_folds(speakers: Sequence[str], num_folds: int = 0) -> list[list[str]]:
  """The cross-validation folds of 'folds': sorted speakers dealt round-robin into `num_folds` folds
  (0: one fold per speaker). Round-robin over sorted ids mixes corpora that number their speakers
  by gender (RAVDESS: odd male, even female) into mixed folds."""
  speakers = sorted(set(speakers))
  count = num_folds or len(speakers)
  if not 2 <= count <= len(speakers):
    raise ValueError(f'Cannot make {count} speaker folds from {len(speakers)} speakers {speakers} '
                     '(data.num_folds: 0 for one per speaker, else 2..number of speakers).')
  return [speakers[i::count] for i in range(count)]


def make_split(examples: Sequence[dict[str, Any]], scheme: str, *, test_speakers: Sequence[str] = (),
               num_test_speakers: int = 2, fold: int = 0, num_folds: int = 0, test_fraction: float = 0.2,
               num_val_speakers: int = 0, seed: int = 0) -> dict[str, Any]:
  """Returns {'scheme', 'train': [record indices], 'validation': [...], 'test': [...], 'test_units': [...],
  'validation_units': [...]}; 'validation' is empty when num_val_speakers is 0."""
  if scheme == 'speaker':
    speakers = sorted({e['speaker'] for e in examples})
    if test_speakers:
      unknown = sorted(set(test_speakers) - set(speakers))
      if unknown:
        raise ValueError(f'Held-out speakers {unknown} are not in the data (speakers: {speakers}).')
      held = sorted(test_speakers)
    else:
      if not 0 < num_test_speakers < len(speakers):
        raise ValueError(f'Cannot hold out {num_test_speakers} of {len(speakers)} speakers.')
      held = sorted(np.random.default_rng(seed).permutation(speakers)[:num_test_speakers].tolist())
    is_test = [e['speaker'] in held for e in examples]
  elif scheme == 'group':
    groups = sorted({e['group'] for e in examples})
    if not 0 <= fold < len(groups):
      raise ValueError(f'Fold {fold} out of range: there are {len(groups)} groups {groups}.')
    held = [groups[fold]]
    is_test = [e['group'] == groups[fold] for e in examples]
  elif scheme == 'folds':
    folds = speaker_folds([e['speaker'] for e in examples], num_folds)
    if not 0 <= fold < len(folds):
      raise ValueError(f'Fold {fold} out of range: there are {len(folds)} speaker folds (0..{len(folds) - 1}).')
    held = folds[fold]
    is_test = [e['speaker'] in held for e in examples]
  elif scheme == 'random':
    order = np.random.default_rng(seed).permutation(len(examples))
    test = set(order[:int(round(test_fraction * len(examples)))].tolist())
    held = []
    is_test = [i in test for i in range(len(examples))]
  else:
    raise ValueError(f"Unknown split scheme {scheme!r}; expected 'speaker', 'group', 'folds' or 'random'.")
  train = [i for i, t in enumerate(is_test) if not t]
  validation, val_units = _validation(examples, train, scheme, num_val_speakers, test_fraction, seed)
  split = {
      'scheme': scheme,
      'test_units': held,
      'validation_units': val_units,
      'train': sorted(set(train) - set(validation)),
      'validation': validation,
      'test': [i for i, t in enumerate(is_test) if t],
  }
  if not split['train'] or not split['test']:
    raise ValueError(f'Split {scheme!r} leaves an empty side: {len(split["train"])} train, '
                     f'{len(split["test"])} test examples.')
  return split


def _validation(examples: Sequence[dict[str, Any]], train: Sequence[int], scheme: str, num_val_speakers: int,
                test_fraction: float, seed: int) -> tuple[list[int], list[str]]:
  """The validation records taken from `train`, and the speakers they belong to ([] for 'random')."""
  if num_val_speakers < 0:
    raise ValueError(f'num_val_speakers must be >= 0, got {num_val_speakers}.')
  if not num_val_speakers:
    return [], []
  rng = np.random.default_rng([seed, 1])  # a stream apart from the test side's
  if scheme == 'random':
    order = rng.permutation(len(train))
    return sorted(train[i] for i in order[:int(round(test_fraction * len(train)))]), []
  speakers = sorted({examples[i]['speaker'] for i in train})
  if num_val_speakers >= len(speakers):
    raise ValueError(f'Cannot take {num_val_speakers} validation speaker(s) from the {len(speakers)} training '
                     f'speaker(s) {speakers}: none would be left to train on (set data.num_val_speakers).')
  chosen = sorted(rng.permutation(speakers)[:num_val_speakers].tolist())
  return [i for i in train if examples[i]['speaker'] in chosen], chosen


def split_examples(examples: Sequence[dict[str, Any]], scheme: str, **kwargs) -> dict[str, Any]:
  """`make_split` over the original records; augmented copies join their original in training.

  A copy never lands on the held-out side, nor on the training side when its
  original is held out (same utterance and clip), so no held-out sound leaks
  into training.
  """
  originals = [i for i, e in enumerate(examples) if not e.get('copy', 0)]
  split = make_split([examples[i] for i in originals], scheme, **kwargs)
  train = [originals[i] for i in split['train']]
  trained = {(examples[i]['utterance'], examples[i]['clip']) for i in train}
  copies = [i for i, e in enumerate(examples) if e.get('copy', 0) and (e['utterance'], e['clip']) in trained]
  return {**split, 'train': sorted(train + copies), 'validation': [originals[i] for i in split['validation']],
          'test': [originals[i] for i in split['test']]}


def balance(indices: Sequence[int], labels: Sequence[int], per_class: int, seed: int) -> list[int]:
  """The paper's balancing: each class duplicated or undersampled to `per_class` examples.

  Apply to training indices only. A class with no examples stays absent.
  """
  rng = np.random.default_rng(seed)
  by_class = collections.defaultdict(list)
  for i in indices:
    by_class[labels[i]].append(i)
  balanced = []
  for label in sorted(by_class):
    members = np.array(by_class[label])
    if len(members) >= per_class:
      chosen = rng.choice(members, per_class, replace=False)
    else:  # every example once, then duplicates to fill up
      chosen = np.concatenate([members, rng.choice(members, per_class - len(members), replace=True)])
    balanced.extend(sorted(chosen.tolist()))
  return balanced


def describe(split: dict[str, Any], examples: Sequence[dict[str, Any]], class_names: Sequence[str]) -> str:
  lines = [f"split '{split['scheme']}', held out: {split['test_units'] or 'random clips'}"]
  if split.get('validation'):
    lines[0] += f", validation: {split['validation_units'] or 'random clips'}"
  for side in ('train', 'validation', 'test'):
    if side == 'validation' and not split.get(side):
      continue
    counts = collections.Counter(class_names[examples[i]['label']] for i in split[side])
    speakers = len({examples[i]['speaker'] for i in split[side]})
    lines.append(f'  {side}: {len(split[side])} examples, {speakers} speakers, {dict(sorted(counts.items()))}')
  return '\n'.join(lines)


def write(split: dict[str, Any], path: str, examples: Sequence[dict[str, Any]]) -> None:
  """Writes the split with utterance ids, not only record indices, so it outlives a rebuild."""
  files.write_json(path, {**split, **{f'{side}_utterances': sorted({examples[i]['utterance'] for i in split.get(side, ())})
                                      for side in ('train', 'validation', 'test')}})
