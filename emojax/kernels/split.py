"""Split convolutions: output and input gradient by one implementation, kernel gradient by another."""
from __future__ import annotations

from collections.abc import Callable

import jax


def autodiff_kernel_gradient(conv: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
  """The kernel gradient of the convolution `conv` by autodiff, as a function (lhs, rhs, dy, *conv args)."""
  def kernel_gradient(lhs: jax.Array, rhs: jax.Array, dy: jax.Array, *args, **kwargs) -> jax.Array:
    # The vjp's unused primal output is dead code that XLA removes.
    return jax.vjp(lambda w: conv(lhs, w, *args, **kwargs), rhs)[1](dy)[0]
  return kernel_gradient


def conv_split(forward: Callable[..., jax.Array], kernel_gradient: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
  """A convolution whose output and input gradient are `forward`'s and whose kernel gradient is `kernel_gradient`'s.

  `forward` takes `lax.conv_general_dilated`'s arguments; `kernel_gradient` takes
  (lhs, rhs, dy, *the same arguments) and returns the gradient with respect to rhs
  of the same convolution for the output cotangent dy (`patches_kernel_gradient`,
  or `autodiff_kernel_gradient(conv)` for any other). Only the speed differs: XLA's CPU
  kernel gradient of the folded 2D convolution is slow where im2col + one matmul is not.
  """
  def conv(lhs: jax.Array, rhs: jax.Array, *args, **kwargs) -> jax.Array:
    def output(x, w):
      return forward(x, w, *args, **kwargs)

    @jax.custom_vjp
    def split(x, w):
      return output(x, w)

    def split_fwd(x, w):
      return output(x, w), (x, w)

    def split_bwd(residuals, dy):
      x, w = residuals
      # The input gradient of a first layer (its input is data) is dead code that XLA removes.
      dx = jax.vjp(lambda x: output(x, w), x)[1](dy)[0]
      return dx, kernel_gradient(x, w, dy, *args, **kwargs)

    split.defvjp(split_fwd, split_bwd)
    return split(lhs, rhs)

  return conv
