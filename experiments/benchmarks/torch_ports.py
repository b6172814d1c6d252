"""PyTorch ports of the benchmarked models and of Linf PGD (benchmark-only; torch is imported
inside each function, so importing this module needs no torch).

Timing only needs the architecture; the VGG port also takes the Flax weights, so its logits can
be checked against Flax's. Tensors are NCHW float32 in [0, 1].
"""

from __future__ import annotations

import numpy as np


def torch_vgg(params, *, width: float, num_classes: int):
  """The small VGG-19 in PyTorch (NCHW) with the Flax weights ``params``.

  Args:
    params: the Flax model's ``variables["params"]`` (``get_model("vgg19", variant="small",
      width=width)``).
    width: its channel multiplier.
    num_classes: its number of logits.

  Returns:
    An ``nn.Module`` in eval mode mapping ``[N, 3, H, W]`` images to ``[N, num_classes]`` logits.
  """
  import torch
  from torch import nn
  from percadv_jax.models import vgg

  class TorchVGG(nn.Module):
    def __init__(self):
      super().__init__()
      self.convs = nn.ModuleList()
      self.pool_after = []
      cin = 3
      for b, (ch, n) in enumerate(vgg.BLOCKS, start=1):
        for k in range(1, n + 1):
          cout = vgg.scaled(ch, width)
          conv = nn.Conv2d(cin, cout, 3, padding=1)
          name = f"block{b}_conv{k}"
          p = params[name] if name in params else params[name + "_conv"]
          conv.weight.data = torch.from_numpy(np.asarray(p["kernel"]).transpose(3, 2, 0, 1).copy())
          conv.bias.data = torch.from_numpy(np.asarray(p["bias"]).copy())
          self.convs.append(conv)
          self.pool_after.append(k == n)
          cin = cout
      self.fc = nn.Linear(cin, num_classes)
      self.fc.weight.data = torch.from_numpy(np.asarray(params["predictions"]["kernel"]).T.copy())
      self.fc.bias.data = torch.from_numpy(np.asarray(params["predictions"]["bias"]).copy())
      self.register_buffer("mean", torch.tensor(vgg.SMALL_MEAN_RGB).view(1, 3, 1, 1))
      self.register_buffer("std", torch.tensor(vgg.SMALL_STD_RGB).view(1, 3, 1, 1))

    def forward(self, x):
      x = (x - self.mean) / self.std
      for conv, pool in zip(self.convs, self.pool_after):
        x = torch.relu(conv(x))
        if pool:
          x = torch.nn.functional.max_pool2d(x, 2)
      return self.fc(x.mean(dim=(2, 3)))

  return TorchVGG().eval()


def torch_pgd(model, x, y, *, eps, step, steps, generator):
  """Eager PyTorch Linf PGD with random start (the same algorithm as ours / Foolbox's).

  Args:
    model: maps ``[N, 3, H, W]`` images to logits.
    x: ``[N, 3, H, W]`` images in [0, 1]; y: ``[N]`` int64 labels.
    eps: Linf radius; step: step size; steps: iterations.
    generator: the ``torch.Generator`` of the random start.

  Returns:
    The ``[N, 3, H, W]`` adversarial images (detached).
  """
  import torch
  x_adv = (x + torch.empty_like(x).uniform_(-eps, eps, generator=generator)).clamp(0, 1)
  for _ in range(steps):
    x_adv.requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(model(x_adv), y, reduction="sum")
    g, = torch.autograd.grad(loss, x_adv)
    with torch.no_grad():
      x_adv = x_adv + step * g.sign()
      x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
  return x_adv.detach()
