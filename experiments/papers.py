"""What the two papers state, in one place: the numbers and rules our results are held against.

Sources (nothing else here is a paper's):

- The masks paper, "Can Attention Masks Improve Adversarial Robustness?": Table 4 (natural and
  PGD accuracy of four VGG-19 models on MS-COCO-IC and GTSRB-IC), its text and abstract (the
  claims below), Table 1 (MS-COCO-IC images per class), its description of MS-COCO-IC and
  GTSRB-IC, Figures 2 and 3, and the future work named in its conclusion.
- GTSRB's official release (https://benchmark.ini.rub.de/gtsrb_dataset.html): 39,209 training
  and 12,630 test images over 43 classes (per-class official counts are not recorded here).

Table 4's rows are identified by the text: natural training gains "0.73% on MS-COCO and around
19.69% on GTSRB" in PGD accuracy (3.01 - 2.28 and 38.38 - 18.69), so N X_F is the second row; the
abstract's "over 20%" on MS-COCO under adversarial training is 53.62 - 30.80. The rows' model names
are ours (``experiments/configs/attention_masks.py``'s ``MODEL_NAMES``): ``full`` = X (the whole
image), ``masked`` = X_F (the foreground only), ``natural`` = N, ``adversarial`` = A.

The masks paper does not state: its input size, optimiser, schedule, epochs, batch size, the PGD
radius, step size or step count, whether adversarial training starts from scratch, GTSRB-IC's
segmenter parameters, or MS-COCO-IC's crop margin or minimum object area. Every preset value that
fills such a gap is labelled "inferred" or "ours" with its reason where the preset is defined
(``FIELD_SOURCES`` in ``experiments/configs/attention_masks.py`` and ``prepare_data.py``).

``PERCEPTUAL_CAM_FIELD_SOURCES`` labels the perceptual study's ``imagenet_paper`` preset
(``experiments/configs/perceptual_cam.py``, kept by its owners); its "paper" labels repeat what
that preset's docstring attributes to the perceptual paper, whose text is not recorded here.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

MASKS_PAPER = "Can Attention Masks Improve Adversarial Robustness?"

# Table 4's column groups, in the paper's order, and their names.
TABLE4_DATASETS = ("coco_ic", "gtsrb_ic")
DATASET_LABELS = {"coco_ic": "MS-COCO-IC", "gtsrb_ic": "GTSRB-IC"}
# Table 4's rows, in the paper's order (our model names), and the paper's names of them.
TABLE4_ROWS = ("full_natural", "masked_natural", "full_adversarial", "masked_adversarial")
ROW_LABELS = {"full_natural": "N, X", "masked_natural": "N, X_F",
              "full_adversarial": "A, X", "masked_adversarial": "A, X_F"}
# Table 4: accuracy (%) without attack ("natural") and under the Linf PGD adversary ("pgd").
TABLE4 = {
    "coco_ic": {
        "full_natural": {"natural": 79.46, "pgd": 2.28},
        "masked_natural": {"natural": 81.64, "pgd": 3.01},
        "full_adversarial": {"natural": 61.51, "pgd": 30.80},
        "masked_adversarial": {"natural": 72.92, "pgd": 53.62},
    },
    "gtsrb_ic": {
        "full_natural": {"natural": 98.04, "pgd": 18.69},
        "masked_natural": {"natural": 98.04, "pgd": 38.38},
        "full_adversarial": {"natural": 89.54, "pgd": 55.25},
        "masked_adversarial": {"natural": 91.20, "pgd": 64.57},
    },
}
TABLE4_METRICS = ("natural", "pgd")


@dataclasses.dataclass(frozen=True)
class Claim:
  """A statement of the masks paper about the effect of masking (X_F against X).

  Attributes:
    dataset: ``"coco_ic"`` or ``"gtsrb_ic"``.
    regime: ``"natural"`` or ``"adversarial"`` training: the claim compares ``masked_<regime>``
      with ``full_<regime>``, two models evaluated on the same test images.
    metric: ``"natural"`` (accuracy without attack) or ``"pgd"`` (under the PGD adversary).
    kind: ``"gain"`` (masking raises the metric, by the paper's figure) or ``"no_loss"`` (masking
      does not lower it).
    words: what the paper says, quoted where the wording is the paper's (the others read its
      Table 4).
  """
  dataset: str
  regime: str
  metric: str
  kind: str
  words: str

  @property
  def paper(self) -> float:
    """The paper's difference masked - full, in accuracy points, from its Table 4."""
    t = TABLE4[self.dataset]
    return round(t[f"masked_{self.regime}"][self.metric] - t[f"full_{self.regime}"][self.metric],
                 2)


_NO_LOSS = 'masking has "at worst, no impact on natural accuracy"'
CLAIMS = (
    Claim("coco_ic", "natural", "pgd", "gain",
          'with natural training, masking raises PGD accuracy "0.73% on MS-COCO"'),
    Claim("gtsrb_ic", "natural", "pgd", "gain",
          'with natural training, masking raises PGD accuracy "around 19.69% on GTSRB"'),
    Claim("coco_ic", "adversarial", "natural", "gain",
          "with adversarial training, masking raises natural accuracy on MS-COCO-IC"),
    Claim("coco_ic", "adversarial", "pgd", "gain",
          'with adversarial training, masking raises PGD accuracy "over 20%" on MS-COCO (the '
          "abstract)"),
    Claim("gtsrb_ic", "adversarial", "pgd", "gain",
          "with adversarial training, masking raises PGD accuracy on GTSRB-IC, by less than on "
          "MS-COCO-IC"),
    Claim("coco_ic", "natural", "natural", "no_loss", f"with natural training, {_NO_LOSS}"),
    Claim("gtsrb_ic", "natural", "natural", "no_loss", f"with natural training, {_NO_LOSS}"),
    Claim("coco_ic", "adversarial", "natural", "no_loss", f"with adversarial training, {_NO_LOSS}"),
    Claim("gtsrb_ic", "adversarial", "natural", "no_loss",
          f"with adversarial training, {_NO_LOSS}"),
)
# Figures the text states in words (the check that Table 4's rows are read right).
TEXT_FIGURES = {("coco_ic", "natural", "pgd"): 0.73, ("gtsrb_ic", "natural", "pgd"): 19.69}
ABSTRACT_LOWER_BOUND = {("coco_ic", "adversarial", "pgd"): 20.0}  # "over 20% on MS-COCO"
# The one claim across the two datasets: the adversarial masking gain in PGD accuracy is smaller
# on GTSRB-IC than on MS-COCO-IC (Table 4: +9.32 against +22.82).
CROSS_DATASET_CLAIM = ("adversarial", "pgd", "gtsrb_ic", "coco_ic")

# Table 1: MS-COCO-IC images per class, (train, test), in the paper's order.
TABLE1_COCO = {
    "chair": (21674, 11077), "car": (18498, 9594), "book": (12094, 6188),
    "bottle": (10923, 5735), "dining table": (10291, 5274), "umbrella": (6510, 3309),
    "boat": (5531, 2797), "motorcycle": (5340, 2703), "sheep": (4748, 2432),
    "cow": (4391, 2162),
}
TABLE1_COCO_TOTAL = (100000, 51271)  # the training counts sum to exactly 100,000: likely a cap
GTSRB_OFFICIAL = {"train": 39209, "test": 12630, "num_classes": 43}

# The papers' words on the datasets and the model (the presets' "paper" labels quote these).
COCO_RULES = {
    "one_label": "each image holds object(s) of one label; pixels of other objects inside the "
                 "crop are blacked out",
    "one_object_mask": '"the mask corresponding to an image contains annotations for one object '
                       'only"',
    "square": "square crops, resized to one fixed size (the number is not given)",
    "classes": "person ignored, the ten most frequent remaining classes (Table 1)",
}
GTSRB_SEGMENTER = ('"random sampling of pixels near the center of the image along with a min '
                   'cut-max flow algorithm"; the paper blames GTSRB-IC\'s low foreground share on '
                   "this ad-hoc segmenter")
MODEL = "VGG-19"
THREAT = ("an Linf PGD adversary (eps, steps and step size not given); on masked models the "
          "adversary only gets the foreground pixels")
FUTURE_WORK = ("Simon-Gabriel et al.: first-order adversarial vulnerability grows with the input "
               "dimension, so masking may help by removing input features")


def leaf_paths(config: Any, prefix: str = "") -> list[str]:
  """The dotted paths of every leaf field of a ``ConfigDict`` (or nested dict), sorted."""
  d = config.to_dict() if hasattr(config, "to_dict") else config
  out = []
  for k, v in d.items():
    if isinstance(v, Mapping):
      out += leaf_paths(v, f"{prefix}{k}.")
    else:
      out.append(f"{prefix}{k}")
  return sorted(out)


SOURCES = ("paper", "inferred", "ours")


def check_sources(config: Any, sources: Mapping[str, tuple[str, str]]) -> list[str]:
  """Problems with a preset's labels: leaf fields without a label, labels of no field, a source
  outside ``SOURCES`` or an empty reason. An empty list means every field is labelled."""
  leaves = set(leaf_paths(config))
  problems = [f"{p}: unlabelled" for p in sorted(leaves - set(sources))]
  problems += [f"{p}: labelled but not a field" for p in sorted(set(sources) - leaves)]
  for p, label in sorted(sources.items()):
    if (not isinstance(label, tuple) or len(label) != 2 or label[0] not in SOURCES
        or not str(label[1]).strip()):
      problems.append(f"{p}: label {label!r} is not (one of {SOURCES}, reason)")
  return problems


_UNUSED = ("ours", "not read by this preset's dataset (an option of another dataset, left at "
                   "its default)")
_NOT_STATED = "the perceptual paper's text is not recorded in this project; "
# Labels of ``experiments/configs/perceptual_cam.py:imagenet_paper`` (that file is kept by the
# perceptual study's owners; its docstring's attributions are repeated here).
PERCEPTUAL_CAM_FIELD_SOURCES = {"imagenet_paper": {
    "seeds": ("ours", "two runs to test replication; the paper has one run"),
    "data.dataset": ("paper", "the preset's docstring: the paper uses ImageNet; we read "
                              "ImageNet-style photographs from an image folder"),
    "data.data_dir": ("ours", "a path on the running machine"),
    "data.image_size": ("inferred", "224 px: MobileNetV2's ImageNet input size"),
    "data.num_train": _UNUSED, "data.num_test": _UNUSED, "data.segmenter": _UNUSED,
    "data.year": _UNUSED, "data.classes": _UNUSED, "data.num_classes": _UNUSED,
    "data.crop": _UNUSED, "data.blackout": _UNUSED, "data.min_area": _UNUSED,
    "data.margin": _UNUSED,
    "data.labels_file": ("ours", "optional labels; without them the model's predictions are "
                                 "the labels"),
    "data.split": ("ours", "the image folder's own split"),
    "data.num_images": ("ours", _NOT_STATED + "200 correctly classified images (the preset's "
                                "docstring: the paper's count is not stated)"),
    "data.candidates": ("ours", "images scanned for the correctly classified ones"),
    "model.keras_weights": ("paper", "the preset's docstring: MobileNetV2 with Keras' ImageNet "
                                     "weights, as the paper (a path given per machine)"),
    "model.width": ("paper", "the preset's docstring: MobileNetV2 1.0, as the paper"),
    "train.num_train": ("ours", "not used: the model is loaded, not trained"),
    "train.batch_size": ("ours", "not used: the model is loaded, not trained"),
    "train.epochs": ("ours", "not used: the model is loaded, not trained"),
    "train.steps": ("ours", "not used: the model is loaded, not trained"),
    "train.learning_rate": ("ours", "not used: the model is loaded, not trained"),
    "train.warmup_steps": ("ours", "not used: the model is loaded, not trained"),
    "train.data_parallel": ("ours", "a model trained here (model.keras_weights='') trains on "
                                    "every device: speed only, not used with the loaded "
                                    "weights"),
    "ball.window": ("ours", _NOT_STATED + "8 x 8 SSIM windows (the preset's docstring: the "
                            "paper's perceptual budget is not stated as numbers)"),
    "ball.stride": ("ours", "stride 4 (as ball.window)"),
    "ball.eps_structure": ("ours", "e2 = 0.05 (as ball.window)"),
    "ball.eps_luminance": ("ours", "e1 = 0.05 (as ball.window)"),
    "attack.ssim_steps": ("ours", "10 Frank-Wolfe steps of the SSIM attack"),
    "attack.pgd_steps": ("ours", "Linf / L2 PGD-10, the SSIM attack's step count"),
    "attack.linf_eps": ("ours", "0 = matched to the SSIM attack's median Linf norm (the "
                                "comparison at equal size)"),
    "attack.l2_eps": ("ours", "0 = matched to the SSIM attack's median L2 norm"),
    "attack.batch_size": ("ours", "memory only; no effect on the results"),
    "attack.diagnostics": ("ours", "our trust checks of the Linf evaluation"),
    "attack.stronger_steps": ("ours", "the trust checks' APGD step count"),
    "attack.diagnostic_examples": ("ours", "images the trust checks use"),
    "attack.checklist.enabled": ("ours", "our robustness checklist (Carlini et al. 2019, "
                                         "Tramer et al. 2020) of the Linf PGD evaluation; the "
                                         "paper has none"),
    "attack.checklist.examples": ("ours", "256, as the trust checks' diagnostic_examples: "
                                          "every one of the 200 selected images"),
    "attack.checklist.restarts": ("ours", "5 random restarts for the more-restarts item: "
                                          "affordable beside PGD-10; not a paper's value"),
    "attack.checklist.square_queries": ("ours", "5,000 queries, AutoAttack's Square budget"),
    "cam.layer": ("paper", "the preset's docstring: the CAM at the last convolutional layer "
                           "(out_relu), as the paper"),
    "cam.top_k": ("ours", "the share of pixels of our top-k IoU"),
    "report.bootstrap": ("ours", "bootstrap resamples of our confidence intervals"),
    "report.figure_images": ("ours", "images drawn in our figures"),
    "cam.energy_top_k": ("ours", "the CAM regions of the direct answer (top 10% and 20%); the "
                                 "paper's abstract states no region size"),
    "sanity.nulls": ("ours", "null baselines of our sanity checks (Adebayo et al. 2018 for the "
                             "model randomisation), not in the paper"),
    "sanity.cascade": ("ours", "cascade stages of our model-randomisation test"),
    "sanity.null_stage": ("ours", "the randomisation stage used as the null (every layer)"),
    "sanity.smooth_sigma": ("ours", "0 = matched to the CAMs' autocorrelation"),
    "sanity.random_maps": ("ours", "smooth random maps per image: a cheap null"),
    "sanity.deletion_steps": ("ours", "steps of our CAM deletion check"),
    "sanity.deletion_baseline": ("ours", "deleted pixels take the image mean, a common choice"),
}}
