"""PyTorch ports of the benchmarked models and of Linf PGD (benchmark-only; torch is imported
inside each function, so importing this module needs no torch).

Timing only needs the architecture; the VGG port also takes the Flax weights, so its logits can
be checked against Flax's (MobileNetV2's has random weights). Tensors are NCHW float32 in
[0, 1].
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


def torch_mobilenet_v2(*, width: float, num_classes: int, size: int, seed: int = 0):
  """MobileNetV2 in PyTorch (NCHW, eval-mode BatchNorm, Keras' padding) with random weights.

  Args:
    width: the width multiplier (alpha) of ``percadv_jax.models.mobilenet_v2``'s channel plan.
    num_classes: the number of logits.
    size: the input side in pixels (the stride-2 paddings depend on it, as in Keras).
    seed: ``torch.manual_seed`` of the weights.

  Returns:
    An ``nn.Module`` in eval mode mapping ``[N, 3, size, size]`` images in [0, 1] to
    ``[N, num_classes]`` logits.
  """
  import torch
  from torch import nn
  from percadv_jax.models import layers, mobilenet_v2 as mnv2

  def pad_for(stride, s):
    if stride == 1:
      return (1, 1, 1, 1), s
    a, b = layers.stride2_pad(s)
    return (a, b, a, b), (s + a + b - 3) // 2 + 1

  class Block(nn.Module):
    def __init__(self, c_in, expanded, c_out, stride, s, first):
      super().__init__()
      self.expand = None if first else nn.Sequential(
          nn.Conv2d(c_in, expanded, 1, bias=False), nn.BatchNorm2d(expanded, eps=1e-3),
          nn.ReLU6())
      self.pad, self.out_size = pad_for(stride, s)
      self.dw = nn.Sequential(
          nn.Conv2d(expanded, expanded, 3, stride=stride, groups=expanded, bias=False),
          nn.BatchNorm2d(expanded, eps=1e-3), nn.ReLU6())
      self.project = nn.Sequential(nn.Conv2d(expanded, c_out, 1, bias=False),
                                   nn.BatchNorm2d(c_out, eps=1e-3))
      self.residual = c_in == c_out and stride == 1

    def forward(self, x):
      h = x if self.expand is None else self.expand(x)
      h = self.project(self.dw(nn.functional.pad(h, self.pad)))
      return x + h if self.residual else h

  class Net(nn.Module):
    def __init__(self):
      super().__init__()
      plan = mnv2.channel_plan(width)
      self.pad, s = pad_for(2, size)
      self.stem = nn.Sequential(nn.Conv2d(3, plan["first"], 3, stride=2, bias=False),
                                nn.BatchNorm2d(plan["first"], eps=1e-3), nn.ReLU6())
      blocks = []
      for i, (c_in, expanded, c_out, stride) in enumerate(plan["blocks"]):
        blocks.append(Block(c_in, expanded, c_out, stride, s, i == 0))
        s = blocks[-1].out_size
      self.blocks = nn.Sequential(*blocks)
      c = plan["blocks"][-1][2]
      self.head = nn.Sequential(nn.Conv2d(c, plan["last"], 1, bias=False),
                                nn.BatchNorm2d(plan["last"], eps=1e-3), nn.ReLU6())
      self.fc = nn.Linear(plan["last"], num_classes)

    def forward(self, x):
      x = self.stem(nn.functional.pad(x * 2 - 1, self.pad))
      x = self.head(self.blocks(x))
      return self.fc(x.mean(dim=(2, 3)))

  torch.manual_seed(seed)
  return Net().eval()
