r"""Training and inference speed of emojax's models against their PyTorch twin.

  python -m experiments.benchmark                                  # every model, paper sizes, batch 64
  python -m experiments.benchmark --models=cnn_rnn,video3d --steps=5
  python -m experiments.benchmark --quick                          # tiny shapes: a smoke test in seconds
  python -m experiments.benchmark --layers                         # each paper conv layer, every impl
  python -m experiments.benchmark --layers --xla_flags=--xla_cpu_experimental_onednn_custom_call=true
  python -m experiments.benchmark --settings=xla,patches,xla:bfloat16    # several emojax settings, the fastest shown
  python -m experiments.benchmark --torch_device=cuda                     # GPU: JAX takes it by itself
  python -m experiments.benchmark --nomodel_cases --pipeline_workers=4    # input pipeline and latency only

Writes benchmark.json and benchmark.md (--layers: layers.json and layers.md) under --out and prints
the tables. The torch rows need the 'torch' extra (`pip install -e '.[torch]'`); without it they are
skipped. --nopipeline / --nolatency skip the input pipeline and the single-clip latency parts.
"""
from absl import app, flags

from emojax import host

if __name__ == '__main__':
  host.reexec_with_hugepages()
  from experiments.benchmark import main  # defines the flags
  flags.adopt_module_key_flags(main)  # --help lists them
  app.run(main.main)
