"""Corpus readers, chosen by name."""
import hashlib
import importlib
import os

from emojax.corpora.base import Corpus, Skipped, Utterance

# name -> (module, class) of each reader; imported on use.
READERS = {
    'synthetic': ('emojax.corpora.synthetic', 'SyntheticCorpus'),
    'iemocap': ('emojax.corpora.iemocap', 'IemocapCorpus'),
    'emodb': ('emojax.corpora.emodb', 'EmodbCorpus'),
    'ravdess': ('emojax.corpora.ravdess', 'RavdessCorpus'),
    'cremad': ('emojax.corpora.cremad', 'CremadCorpus'),
}


def get_corpus(corpus_config) -> Corpus:
  """The reader `corpus_config.name` names, over `corpus_config.root` (real corpora)."""
  name = corpus_config.name
  if name not in READERS:
    raise ValueError(f'Unknown corpus {name!r}; expected one of {sorted(READERS)}.')
  module, cls = READERS[name]
  reader = getattr(importlib.import_module(module), cls)
  if name == 'synthetic':
    return reader(**corpus_config.synthetic.to_dict())
  if not corpus_config.root:
    raise ValueError(f'Corpus {name!r} needs --config.corpus.root=<folder of the corpus>.')
  options = {'iemocap': {'audio_source': corpus_config.iemocap_audio_source},
             'ravdess': {'keep_song': corpus_config.ravdess_keep_song}}.get(name, {})
  return reader(corpus_config.root, **options)


def corpus_key(corpus_config) -> str:
  """Names a corpus's build directory: the generator parameters matter for the synthetic one."""
  if corpus_config.name == 'synthetic':
    from emojax.corpora import synthetic  # its generator's version: a changed generator rebuilds
    params = {**corpus_config.synthetic.to_dict(), 'version': synthetic.VERSION}
    text = ','.join(f'{k}={v}' for k, v in sorted(params.items()))
    return f'synthetic_{hashlib.sha1(text.encode()).hexdigest()[:8]}'
  root = os.path.abspath(corpus_config.root)
  return f'{corpus_config.name}_{hashlib.sha1(root.encode()).hexdigest()[:8]}'
