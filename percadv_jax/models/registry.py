"""Model registry: ``get_model(name, *, num_classes, **kw)``."""

from __future__ import annotations

import dataclasses

import flax.linen as nn

from percadv_jax import checks
from percadv_jax.models.mobilenet_v2 import MobileNetV2
from percadv_jax.models.vgg import INITS, VARIANTS, VGG19

MODELS: dict[str, type[nn.Module]] = {"mobilenet_v2": MobileNetV2, "vgg19": VGG19}


def get_model(name: str, *, num_classes: int, **kw) -> nn.Module:
  """Builds the Flax module ``name`` with a head of ``num_classes`` logits.

  Args:
    name: "mobilenet_v2" or "vgg19".
    num_classes: number of output logits (> 0).
    **kw: the model's attributes: ``width`` (channel multiplier; MobileNetV2's alpha) for both;
      for "vgg19" also ``variant`` ("imagenet" | "small"), ``batch_norm`` (small only),
      ``fc_features`` and ``initializer`` ("lecun" | "he").
  Returns:
    an unbound ``flax.linen.Module``; ``module.init(key, x)`` gives ``{"params", ["batch_stats"]}``
    and ``module.apply(variables, x, train=False)`` the logits [N, num_classes] for float32 RGB
    inputs [N, H, W, 3] in [0, 1].
  Raises:
    ValueError: unknown name (the known ones are listed), unknown keyword, bad value
      (``num_classes`` / ``fc_features`` not a positive integer, ``width`` not a finite number
      > 0, ``batch_norm`` not a bool). NumPy scalars are accepted and stored as Python numbers.
  """
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; known models: {sorted(MODELS)}")
  cls = MODELS[name]
  fields = {f.name for f in dataclasses.fields(cls)} - {"parent", "name", "num_classes"}
  unknown = sorted(set(kw) - fields)
  if unknown:
    raise ValueError(f"unknown keyword(s) {unknown} for model {name!r}; accepted: "
                     f"{sorted(fields)}")
  num_classes = checks.check_int(num_classes, "num_classes", minimum=1)
  if "width" in kw:
    kw["width"] = checks.check_float(kw["width"], "width", minimum=0.0, min_inclusive=False)
  if "fc_features" in kw:
    kw["fc_features"] = checks.check_int(kw["fc_features"], "fc_features", minimum=1)
  if "batch_norm" in kw:
    kw["batch_norm"] = checks.check_bool(kw["batch_norm"], "batch_norm")
  if name == "vgg19":
    variant = kw.get("variant", "imagenet")
    if variant not in VARIANTS:
      raise ValueError(f"unknown variant {variant!r}; choose one of {list(VARIANTS)}")
    checks.check_choice(kw.get("initializer", "lecun"), "initializer", INITS)
    if kw.get("batch_norm", False) and variant != "small":
      raise ValueError("batch_norm=True is only available for variant='small'")
  return cls(num_classes=num_classes, **kw)
