"""The speed benchmark, `python -m experiments.benchmark` (usage: __main__.py, or --help).

Each part runs in a child process (main.py: the flags, the children, the report files):
  cases.py        an emojax model's jitted AdamW training step: compile time, compilations, XLA FLOPs,
                  samples/s, peak memory; batch-1 latency
  torch_cases.py  the same for the torch twin (experiments/torch_reference.py), and its conv layers
  layers.py       each paper convolution alone, forward + backward, in `emojax.kernels`' impls
  pipeline.py     the Grain input pipeline against the training step it feeds
  latency.py      one real clip from file to prediction: decode, features, model
  machine.py      CPU, cores, JAX device, XLA's measured matmul peak
  report.py       the markdown tables
  common.py       sizes, random batches, timing (no JAX, no torch)
"""
