"""Window bookkeeping of the quality ball: groups of non-overlapping windows.

All ``w x w`` windows at stride ``s`` (valid positions) along an axis of length ``L`` start at
``j * s`` for ``j = 0 .. K - 1`` with ``K = (L - w) // s + 1``. With ``g = ceil(w / s)`` the
windows ``j = r, r + g, r + 2g, ...`` (one *group* ``r`` per axis) are ``g * s >= w`` apart, so
they do not overlap. In 2-D there are ``g**2`` groups (those with no window are dropped). A group's
windows are cut out of an image ``[..., H, W, C]`` by a static slice and a reshape to
``[..., Ky, w, Kx, w, C]``; pixels that lie in no window of the group are simply not in it, which is
how image sides that are not a multiple of the stride (and borders of shifted groups) are handled
exactly.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Group:
  """One group of non-overlapping windows: start offsets, window counts, pitch, and where its
  windows sit in the full grid of window positions (``iy = ry + g * k``)."""
  oy: int
  ox: int
  ky: int
  kx: int
  ry: int
  rx: int
  g: int
  window: int
  pitch: int


def num_windows(length: int, window: int, stride: int) -> int:
  return (length - window) // stride + 1


def groups(height: int, width: int, window: int, stride: int) -> tuple[Group, ...]:
  """The non-empty groups of non-overlapping windows for an image of ``height x width``."""
  g = math.ceil(window / stride)
  kh, kw = num_windows(height, window, stride), num_windows(width, window, stride)
  out = []
  for ry in range(g):
    for rx in range(g):
      ky = max(0, -(-(kh - ry) // g))
      kx = max(0, -(-(kw - rx) // g))
      if ky and kx:
        out.append(Group(ry * stride, rx * stride, ky, kx, ry, rx, g, window, g * stride))
  return tuple(out)


def _pad_to(v: jax.Array, gr: Group) -> jax.Array:
  h, w = v.shape[-3], v.shape[-2]
  need_h, need_w = gr.oy + gr.ky * gr.pitch, gr.ox + gr.kx * gr.pitch
  ph, pw = max(0, need_h - h), max(0, need_w - w)
  if ph or pw:
    pad = [(0, 0)] * (v.ndim - 3) + [(0, ph), (0, pw), (0, 0)]
    v = jnp.pad(v, pad)
  return v


def extract(v: jax.Array, gr: Group) -> jax.Array:
  """``v`` [..., H, W, C] -> the group's windows [..., Ky, w, Kx, w, C]."""
  lead = v.shape[:-3]
  c = v.shape[-1]
  p, w = gr.pitch, gr.window
  v = _pad_to(v, gr)
  v = v[..., gr.oy:gr.oy + gr.ky * p, gr.ox:gr.ox + gr.kx * p, :]
  v = v.reshape(lead + (gr.ky, p, gr.kx, p, c))
  if p != w:
    v = v[..., :w, :, :w, :]
  return v


def put(v: jax.Array, gr: Group, win: jax.Array) -> jax.Array:
  """``v`` with the group's windows replaced by ``win`` [..., Ky, w, Kx, w, C]."""
  lead = v.shape[:-3]
  h, wd, c = v.shape[-3:]
  p, w = gr.pitch, gr.window
  vp = _pad_to(v, gr)
  region = vp[..., gr.oy:gr.oy + gr.ky * p, gr.ox:gr.ox + gr.kx * p, :]
  if p != w:
    region = region.reshape(lead + (gr.ky, p, gr.kx, p, c))
    region = region.at[..., :w, :, :w, :].set(win)
  else:
    region = win
  region = region.reshape(lead + (gr.ky * p, gr.kx * p, c))
  vp = jax.lax.dynamic_update_slice(vp, region.astype(vp.dtype),
                                    (0,) * len(lead) + (gr.oy, gr.ox, 0))
  return vp[..., :h, :wd, :]


def scatter(shape: tuple[int, ...], gr: Group, win: jax.Array) -> jax.Array:
  """An array of ``shape`` [..., H, W, C] that is ``win`` on the group's windows, 0 elsewhere."""
  lead = shape[:-3]
  h, wd, c = shape[-3:]
  p, w = gr.pitch, gr.window
  if p != w:
    pad = [(0, 0)] * len(lead) + [(0, 0), (0, p - w), (0, 0), (0, p - w), (0, 0)]
    win = jnp.pad(win, pad)
  region = win.reshape(lead + (gr.ky * p, gr.kx * p, c))
  hp, wp = gr.oy + gr.ky * p, gr.ox + gr.kx * p
  pad = [(0, 0)] * len(lead) + [(gr.oy, max(0, h - hp)), (gr.ox, max(0, wd - wp)), (0, 0)]
  return jnp.pad(region, pad)[..., :h, :wd, :]


def win_mean(win: jax.Array) -> jax.Array:
  """Window means [..., Ky, 1, Kx, 1, C] of windows [..., Ky, w, Kx, w, C]."""
  return jnp.mean(win, axis=(-4, -2), keepdims=True)


def win_sum(win: jax.Array) -> jax.Array:
  return jnp.sum(win, axis=(-4, -2), keepdims=True)
