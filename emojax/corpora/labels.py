"""Canonical emotion names shared by every corpus, and the class sets a model is trained on.

Each reader maps its own labels ('W', '05', 'ANG', 'ang', ...) to these names
through its `canonical` dict, so class sets mean the same across corpora:

  neu  neutral                               every corpus
  hap  happiness / joy                       every corpus
  sad  sadness                               every corpus
  ang  anger                                 every corpus
  exc  excited (IEMOCAP; often merged into 'hap', see `merge_exc`)
  fru  frustration (IEMOCAP)
  sur  surprise (IEMOCAP, RAVDESS)
  fea  fear (IEMOCAP, EmoDB, RAVDESS, CREMA-D)
  dis  disgust (IEMOCAP, EmoDB, RAVDESS, CREMA-D)
  oth  other (IEMOCAP: the evaluators' free-text 'other')
  cal  calm (RAVDESS)
  bor  boredom (EmoDB)
  xxx  no majority among the IEMOCAP evaluators: not an emotion, in no class set
"""
from __future__ import annotations

from typing import Sequence

DESCRIPTIONS = {
    'neu': 'neutral',
    'hap': 'happiness',
    'sad': 'sadness',
    'ang': 'anger',
    'exc': 'excited',
    'fru': 'frustration',
    'sur': 'surprise',
    'fea': 'fear',
    'dis': 'disgust',
    'oth': 'other',
    'cal': 'calm',
    'bor': 'boredom',
    'xxx': 'no majority label',
}
# Labels that name no emotion: left out of every class set, even 'all'.
NOT_AN_EMOTION = ('xxx',)

# The paper's class sets, in its order.
CLASS_SETS = {
    '4class': ('hap', 'sad', 'ang', 'neu'),
    '3class': ('sad', 'ang', 'neu'),
}


def class_names(class_set: str, corpus_labels: Sequence[str], *, merge_exc: bool = False) -> tuple[str, ...]:
  """The canonical names of the classes, in class-index order.

  Args:
    class_set: '4class', '3class', or 'all' (every emotion the corpus labels).
    corpus_labels: the corpus's labels mapped to canonical names, in the corpus's order.
    merge_exc: count 'exc' as 'hap' (so 'exc' is no class of its own).

  Returns:
    The class names; class index = position in this tuple.

  Raises:
    ValueError: unknown class set or canonical name, or a class of the set the corpus never uses.
  """
  unknown = sorted(set(corpus_labels) - set(DESCRIPTIONS))
  if unknown:
    raise ValueError(f'Unknown canonical labels {unknown}; expected names from {sorted(DESCRIPTIONS)}.')
  if class_set == 'all':
    names = dict.fromkeys(l for l in corpus_labels if l not in NOT_AN_EMOTION and not (merge_exc and l == 'exc'))
    if merge_exc and 'exc' in corpus_labels:
      names.setdefault('hap')
    return tuple(names)
  if class_set not in CLASS_SETS:
    raise ValueError(f"Unknown class set {class_set!r}; expected one of {sorted(CLASS_SETS) + ['all']}.")
  available = set(corpus_labels) | ({'hap'} if merge_exc and 'exc' in corpus_labels else set())
  missing = [name for name in CLASS_SETS[class_set] if name not in available]
  if missing:
    raise ValueError(f'Class set {class_set!r} needs {missing}, which this corpus does not label.')
  return CLASS_SETS[class_set]


def class_index(canonical_label: str | None, names: Sequence[str], *, merge_exc: bool = False) -> int | None:
  """Index of `canonical_label` among `names`; None when the class set leaves it out."""
  if merge_exc and canonical_label == 'exc':
    canonical_label = 'hap'
  if canonical_label is None or canonical_label not in names:
    return None
  return list(names).index(canonical_label)
