"""Window bookkeeping of the quality ball: groups of non-overlapping windows.

All ``w x w`` windows at stride ``s`` (valid positions) along an axis of length ``L`` start at
``j * s`` for ``j = 0 .. K - 1`` with ``K = (L - w) // s + 1``. With ``g = ceil(w / s)`` the
windows ``j = r, r + g, r + 2g, ...`` (one *group* ``r`` per axis) are ``g * s >= w`` apart, so
they do not overlap. In 2-D there are ``g**2`` groups (those with no window are dropped). A group's
windows are cut out of an image ``[..., H, W, C]`` by a static slice and a reshape to
``[..., Ky, w, Kx, w, C]``; pixels that lie in no window of the group are simply not in it, which is
how the borders of shifted groups are handled exactly. These helpers take any sizes (also sides
whose last windows stop short of the border); ``QualityBall`` refuses those (``check_size``).
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
  """Number of valid positions of a ``window``-pixel window at ``stride`` along ``length``."""
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


def win_mean(win: jax.Array) -> jax.Array:
  """Window means [..., Ky, 1, Kx, 1, C] of windows [..., Ky, w, Kx, w, C]."""
  return jnp.mean(win, axis=(-4, -2), keepdims=True)


# -- cell layout (the ADMM engine's working layout) -----------------------------------------------
#
# With ``c = gcd(w, s)`` every window is a union of ``c x c`` cells of the grid that starts at the
# image origin. The engine keeps images as ``[C, Hc, Wc, c*c]`` (cells of the region that some
# window covers, ``Hc * c = (Ky - 1) * s + w`` rows; the pixels of a cell contiguous), so a group's
# projection is elementwise work on the whole array plus small reductions over ``[C, Hc, Wc]``
# cell statistics: no pads, slices or transposes of pixel arrays per iteration.


@dataclasses.dataclass(frozen=True)
class CellGroup:
  """One group of non-overlapping windows in cell units: offset of its first window, window
  counts, window side (``span`` cells) and window pitch (``pitch >= span`` cells)."""
  oy: int
  ox: int
  ky: int
  kx: int
  span: int
  pitch: int


@dataclasses.dataclass(frozen=True)
class CellGrid:
  """The cell layout of an image: cell side, cell rows/cols of the covered region, groups."""
  cell: int
  hc: int
  wc: int
  groups: tuple[CellGroup, ...]


def cell_grid(height: int, width: int, window: int, stride: int) -> CellGrid:
  """The cell layout ``[C, Hc, Wc, c*c]`` (``c = gcd(window, stride)``) of an image of shape
  [height, width, C]."""
  c = math.gcd(window, stride)
  kh, kw = num_windows(height, window, stride), num_windows(width, window, stride)
  hc, wc = ((kh - 1) * stride + window) // c, ((kw - 1) * stride + window) // c
  pitch = math.ceil(window / stride) * stride // c
  return CellGrid(c, hc, wc, tuple(
      CellGroup(gr.oy // c, gr.ox // c, gr.ky, gr.kx, window // c, pitch)
      for gr in groups(height, width, window, stride)))


def to_cells(v: jax.Array, grid: CellGrid) -> jax.Array:
  """``v`` [..., H, W, C] -> its covered region in cells [..., C, Hc, Wc, c*c]."""
  lead, nl, ch, c = v.shape[:-3], v.ndim - 3, v.shape[-1], grid.cell
  v = v[..., :grid.hc * c, :grid.wc * c, :].reshape(lead + (grid.hc, c, grid.wc, c, ch))
  v = v.transpose(tuple(range(nl)) + (nl + 4, nl, nl + 2, nl + 1, nl + 3))
  return v.reshape(lead + (ch, grid.hc, grid.wc, c * c))


def from_cells(cells: jax.Array, base: jax.Array, grid: CellGrid) -> jax.Array:
  """``base`` [..., H, W, C] with its covered region replaced by ``cells`` [..., C, Hc, Wc, c*c]."""
  lead, nl, ch, c = cells.shape[:-4], cells.ndim - 4, cells.shape[-4], grid.cell
  v = cells.reshape(lead + (ch, grid.hc, grid.wc, c, c))
  v = v.transpose(tuple(range(nl)) + (nl + 1, nl + 3, nl + 2, nl + 4, nl))
  v = v.reshape(lead + (grid.hc * c, grid.wc * c, ch))
  return base.at[..., :grid.hc * c, :grid.wc * c, :].set(v.astype(base.dtype))


def cell_win_sum(stat: jax.Array, gr: CellGroup) -> jax.Array:
  """Per-window sums [..., Ky, Kx] of a cell statistic ``stat`` [..., Hc, Wc] over a group."""
  lead, (hc, wc) = stat.shape[:-2], stat.shape[-2:]
  need_h, need_w = gr.oy + gr.ky * gr.pitch, gr.ox + gr.kx * gr.pitch
  if need_h > hc or need_w > wc:
    stat = jnp.pad(stat, [(0, 0)] * len(lead) + [(0, max(0, need_h - hc)),
                                                 (0, max(0, need_w - wc))])
  stat = stat[..., gr.oy:need_h, gr.ox:need_w].reshape(lead + (gr.ky, gr.pitch, gr.kx, gr.pitch))
  return jnp.sum(stat[..., :gr.span, :, :gr.span], axis=(-3, -1))


def cell_win_bcast(val: jax.Array, gr: CellGroup, grid: CellGrid) -> jax.Array:
  """Per-window values [..., Ky, Kx] spread over the windows' cells [..., Hc, Wc] (0 elsewhere)."""
  lead = val.shape[:-2]
  v = jnp.broadcast_to(val[..., :, None, :, None], lead + (gr.ky, gr.span, gr.kx, gr.span))
  if gr.pitch != gr.span:
    q = gr.pitch - gr.span
    v = jnp.pad(v, [(0, 0)] * len(lead) + [(0, 0), (0, q), (0, 0), (0, q)])
  v = v.reshape(lead + (gr.ky * gr.pitch, gr.kx * gr.pitch))
  ph, pw = gr.oy + gr.ky * gr.pitch, gr.ox + gr.kx * gr.pitch
  v = jnp.pad(v, [(0, 0)] * len(lead) + [(gr.oy, max(0, grid.hc - ph)),
                                         (gr.ox, max(0, grid.wc - pw))])
  return v[..., :grid.hc, :grid.wc]
