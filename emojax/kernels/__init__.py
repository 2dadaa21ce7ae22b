"""CPU speed only: faster implementations of the paper's convolutions and max-pools, and the plan that
picks one per layer. The networks in emojax.models compute the same function with any plan.

One file per implementation: patches (im2col), fft, fold2d, native (C++ through the XLA FFI),
split (A for the output, B for the kernel gradient), pools; plans resolves a model's plan.
"""
from emojax.kernels.plans import CONV_IMPLS, CPU_PLANS, Plan, check, conv_function, resolve
from emojax.kernels.pools import POOL_IMPLS, max_pool

__all__ = ['CONV_IMPLS', 'CPU_PLANS', 'POOL_IMPLS', 'Plan', 'check', 'conv_function', 'max_pool', 'resolve']
