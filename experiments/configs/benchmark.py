r"""Configuration of the benchmarks (``python -m experiments.benchmark``): a preset per benchmark.

``--config=experiments/configs/benchmark.py:<preset>``; the preset's ``benchmark`` field picks
the module of ``experiments/benchmarks/`` that runs it. Presets: ``conv``, ``attacks``,
``autoattack``, ``cam``, ``loader``, ``perceptual``, ``pipeline``, ``training`` (the published
figures' settings); ``loader_memory`` (section ``benchmark_loader_memory``);
``conv_variants`` (the XLA-flag and patches variants on the small VGG-19, section
``benchmark_conv_vgg32_variants``), ``conv_gpu`` (one GPU, PyTorch on CUDA, sections
``benchmark_conv_<model>_gpu``), ``gpu`` (the GPU rows, section ``benchmark_gpu``; on a CPU
it runs too and records only that the GPU rows are not measured yet), ``training_xla``
(``conv_impl="xla"``, section ``benchmark_training_xla``); and ``<benchmark>_quick`` (tiny sizes that finish in seconds; their
numbers mean nothing).

Fields of every preset:

- ``benchmark``: which benchmark (``experiments/benchmarks/<benchmark>.py``).
- ``record``: write the figures into the results file (one section per benchmark,
  ``benchmark_<benchmark><tag>``); ``results_file``: that file (``""`` = docs/benchmarks.md);
  ``tag``: the section-name suffix (letters, digits, ``_``), so that a run of other settings
  keeps the main section. The workdir's ``config.json`` locks every other field.
- ``seed``: of the images, weights and random starts.

``autoattack`` (AutoAttack's standard cascade, ours vs torchattacks'): ``batch_size`` (images),
``image_size``, ``width`` (of the small VGG-19), ``num_classes``, ``eps`` (Linf), ``iterations``
(APGD-CE, APGD-T, FAB-T), ``targets`` (APGD-T, FAB-T), ``queries`` (Square), ``rounds``
(interleaved), ``skip`` (``("torch",)`` leaves torchattacks out).

``conv`` (the convolution variants vs PyTorch and Foolbox, each contender in its own worker
process, interleaved rounds): ``models`` (some of "vgg32", "mnv2_64", "mnv2_224", "vgg_tiny"),
``contenders`` (names of ``experiments.benchmarks.conv.CONTENDERS``), ``rounds``, ``reps``
(forward + backward calls per round, the fastest counts), ``steps`` (PGD), ``cpus`` (the
``taskset -c`` CPU list of every contender's process; ``""`` = no pinning), ``device``
("cpu" or "gpu"),
``summarise_only`` (re-report the workdir's figures without measuring).

``attacks`` (PGD vs its floor, Foolbox, PyTorch): ``batch_size``, ``image_size``, ``width`` (of
the small VGG-19), ``num_classes``, ``steps`` (PGD), ``eps`` (Linf), ``rel_step`` (step / eps),
``repeats`` (timed calls, median), ``skip`` (some of "foolbox", "torch").

``cam`` (a CAM call vs a forward + backward pass): ``models`` (some of "vgg19_small", "vgg19",
"mobilenet_v2"), ``methods`` (``percadv_jax.cam`` method names), ``batch_size``, ``image_size``,
``width``, ``num_classes``, ``repeats``, ``layer`` (tap name; ``""`` = each model's cam_layer).

``perceptual`` (the quality-ball LP solver vs CVXPY and a jaxopt variant): ``sizes`` (image
sides), ``batch``, ``window``, ``stride``, ``eps`` (e1 = e2), ``tol`` (certified relative gap),
``repeats``, ``cvxpy_batch`` (images solved by CVXPY per size).

``pipeline`` (images/s per stage, sharded): ``batch_size`` (global, a multiple of the device
count), ``image_size``, ``width``, ``num_classes``, ``pgd_steps``, ``train_pgd_steps``, ``eps``,
``repeats``, ``ssim_size``, ``ssim_batch``, ``cvxpy`` (time the CVXPY reference on one image),
``precision`` ("float32" or "bfloat16"), ``stages`` (some of "peak", "pgd", "train", "ssim",
"cam", "torch").

``loader`` (the input pipeline's images/s beside the training step's; ``loader_memory``: the
peak resident memory of training on 100,000 images of 224 px, section
``benchmark_loader_memory``): ``sizes`` (image sides of the synthetic caches),
``num_examples`` (per cache), ``shard_size``, ``batch_size``, ``batches`` (timed loader
batches), ``width`` (of the small VGG-19), ``repeats`` (timed steps), ``stages`` (some of
"loader", "train", "memory"), ``memory_steps`` and ``memory_batch_size`` (the ``train.fit``
run of "memory", on the largest size), ``delete_cache`` (remove each cache after its size).
``gpu`` (the GPU rows, ``experiments/benchmarks/gpu.py``): ``batch_size`` (global, a multiple
of the device count), ``image_size``, ``width``, ``num_classes``, ``pgd_steps``,
``train_pgd_steps``, ``eps``, ``repeats``, ``precision`` (the pipeline rows); ``smoke_models``,
``smoke_num_train``, ``smoke_num_test``, ``smoke_batch_size``, ``smoke_width``, ``smoke_eval``
("paper" or "quick": the evaluation's sizes) (the 1-epoch ``gtsrb_paper`` sub-run on 43-class
synthetic signs); ``skip`` (some of "torch", "smoke").

``training`` (FGSM-RS vs PGD training, and PyTorch): ``num_train``, ``num_test``,
``eval_examples``, ``width``, ``batch_size``, ``epochs`` (natural), ``adv_epochs``
(adversarial fine-tuning), ``pgd_steps``, ``rounds`` and ``torch_steps`` (interleaved rounds
of the one-step comparison with PyTorch, timed steps per round), ``conv_impl`` ("auto", "xla",
"patches"), ``guard_examples`` and ``guard_steps`` (held-out images and PGD steps of the
catastrophic-overfitting guard), ``eval_pgd_steps`` (PGD steps of the accuracy), ``skip``
(``("torch",)`` leaves PyTorch out).
"""

from __future__ import annotations

import ml_collections

from experiments import configs

def _base(benchmark: str, **fields) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.benchmark = benchmark
  c.record = True
  c.results_file = ""
  c.tag = ""
  c.seed = 0
  for k, v in fields.items():
    c[k] = v
  return c


def attacks() -> ml_collections.ConfigDict:
  return _base("attacks", batch_size=128, image_size=32, width=0.25, num_classes=10, steps=10,
               eps=8 / 255, rel_step=0.25, repeats=3, skip=())


def attacks_quick() -> ml_collections.ConfigDict:
  c = attacks()
  c.update(dict(batch_size=2, width=0.0625, num_classes=4, steps=2, repeats=1))
  return c


def autoattack() -> ml_collections.ConfigDict:
  """AutoAttack's standard budgets (100 iterations, 9 targets, 5000 queries) on 32 CIFAR-size
  images; at eps 3/255 APGD-CE leaves a few images of the random-weight model to APGD-T (at
  1/255 none breaks and Square's 5000 queries run on all, at 4/255 APGD-CE breaks all). Five
  rounds take about 2 minutes on 2 cores (our choice)."""
  return _base("autoattack", batch_size=32, image_size=32, width=0.25, num_classes=10,
               eps=3 / 255, iterations=100, targets=9, queries=5000, rounds=5, skip=())


def autoattack_quick() -> ml_collections.ConfigDict:
  c = autoattack()
  c.update(dict(batch_size=4, width=0.0625, num_classes=4, iterations=1, targets=1, queries=5,
                rounds=1))
  return c


def cam() -> ml_collections.ConfigDict:
  return _base("cam", models=("vgg19_small", "mobilenet_v2"),
               methods=("grad_cam", "grad_cam_pp", "layer_cam"), batch_size=32, image_size=64,
               width=0.5, num_classes=10, repeats=5, layer="")


def cam_quick() -> ml_collections.ConfigDict:
  c = cam()
  c.update(dict(models=("vgg19_small",), methods=("grad_cam",), batch_size=2, image_size=32,
                width=0.0625, num_classes=4, repeats=1))
  return c


def perceptual() -> ml_collections.ConfigDict:
  return _base("perceptual", sizes=(32, 64, 224), batch=16, window=8, stride=4, eps=0.05,
               tol=1e-3, repeats=3, cvxpy_batch=1)


def perceptual_quick() -> ml_collections.ConfigDict:
  c = perceptual()
  c.update(dict(sizes=(16,), batch=1, repeats=1))
  return c


def pipeline() -> ml_collections.ConfigDict:
  return _base("pipeline", batch_size=128, image_size=32, width=0.25, num_classes=10,
               pgd_steps=10, train_pgd_steps=7, eps=8 / 255, repeats=3, ssim_size=32,
               ssim_batch=8, cvxpy=True, precision="float32",
               stages=("peak", "pgd", "train", "ssim", "cam", "torch"))


def pipeline_quick() -> ml_collections.ConfigDict:
  c = pipeline()
  c.update(dict(batch_size=4, width=0.0625, num_classes=4, pgd_steps=2, train_pgd_steps=1,
                repeats=1, ssim_size=16, ssim_batch=2))
  return c


def training() -> ml_collections.ConfigDict:
  return _base("training", num_train=4000, num_test=1000, eval_examples=200, width=0.125,
               batch_size=64, epochs=10, adv_epochs=3, pgd_steps=7, rounds=5, torch_steps=5,
               conv_impl="auto", guard_examples=256, guard_steps=10, eval_pgd_steps=10, skip=())


def training_xla() -> ml_collections.ConfigDict:
  c = training()
  c.update(dict(conv_impl="xla", tag="_xla"))
  return c


def training_quick() -> ml_collections.ConfigDict:
  c = training()
  c.update(dict(num_train=48, num_test=16, eval_examples=8, width=0.0625, batch_size=16,
                epochs=1, adv_epochs=1, pgd_steps=2, rounds=2, torch_steps=1, guard_examples=16,
                guard_steps=1, eval_pgd_steps=1))
  return c


def loader() -> ml_collections.ConfigDict:
  """The loader's images/s beside the training step's at 32, 64 and 224 px. 4096 examples a
  size (600 MB at 224 px: in the page cache of most machines) and 20 batches of 128 keep the run
  to minutes on 2 cores (our choice)."""
  return _base("loader", sizes=(32, 64, 224), num_examples=4096, shard_size=1000,
               batch_size=128, batches=20, width=0.25, repeats=3, stages=("loader", "train"),
               memory_steps=300, memory_batch_size=32, delete_cache=False)


def loader_memory() -> ml_collections.ConfigDict:
  """Peak resident memory of training on a COCO-IC-size split: 100,000 examples at 224 px
  (~19 GB on disk: more than the page cache of a 23 GB machine), 300 steps of 32 on a width
  1/16 model (our choice: loader-bound steps, minutes on 2 cores); the cache is deleted."""
  c = loader()
  c.update(dict(sizes=(224,), num_examples=100_000, width=0.0625, stages=("loader", "memory"),
                delete_cache=True, tag="_memory"))
  return c


def loader_quick() -> ml_collections.ConfigDict:
  c = loader()
  c.update(dict(sizes=(32,), num_examples=64, shard_size=16, batch_size=8, batches=2,
                width=0.0625, repeats=1, stages=("loader", "train", "memory"), memory_steps=2,
                memory_batch_size=8))
  return c


def gpu() -> ml_collections.ConfigDict:
  """Sizes for one GPU: PGD-10 and the training steps on 512 images (43 classes, GTSRB's count),
  the smoke run on 4,096 / 512 synthetic signs with the paper preset's batch 128 and width."""
  return _base("gpu", batch_size=512, image_size=32, width=0.25, num_classes=43, pgd_steps=10,
               train_pgd_steps=7, eps=8 / 255, repeats=5, precision="float32",
               smoke_models=("full_natural", "full_adversarial", "masked_natural",
                             "masked_adversarial"),
               smoke_num_train=4096, smoke_num_test=512, smoke_batch_size=128, smoke_width=1.0,
               smoke_eval="paper", skip=())


def gpu_quick() -> ml_collections.ConfigDict:
  c = gpu()
  c.update(dict(batch_size=4, width=0.0625, pgd_steps=2, train_pgd_steps=1, repeats=1,
                smoke_models=("full_natural",), smoke_num_train=8, smoke_num_test=4,
                smoke_batch_size=4, smoke_width=0.0625, smoke_eval="quick"))
  return c


def conv() -> ml_collections.ConfigDict:
  return _base("conv", models=("vgg32", "mnv2_64", "mnv2_224"),
               contenders=("jax_xla", "jax_auto_emitters", "jax_auto", "torch_1", "torch_all",
                           "foolbox"),
               rounds=5, reps=3, steps=10, cpus="0", device="cpu", summarise_only=False)


def conv_variants() -> ml_collections.ConfigDict:
  c = conv()
  c.update(dict(models=("vgg32",), contenders=("jax_xla", "jax_ynn", "jax_onednn", "jax_patches",
                                               "jax_patches_ynn", "torch_1", "foolbox"),
                tag="_variants"))
  return c


def conv_gpu() -> ml_collections.ConfigDict:
  c = conv()
  c.update(dict(models=("vgg32", "mnv2_224"), contenders=("jax_xla", "torch_1"), reps=10,
                cpus="", device="gpu", tag="_gpu"))
  return c


def conv_quick() -> ml_collections.ConfigDict:
  c = conv()
  c.update(dict(models=("vgg_tiny",), contenders=("jax_xla", "jax_auto", "torch_1"), rounds=2,
                reps=1, steps=1, cpus=""))
  return c


PRESETS = {
    "conv": conv, "conv_variants": conv_variants, "conv_gpu": conv_gpu, "conv_quick": conv_quick,
    "attacks": attacks, "attacks_quick": attacks_quick,
    "autoattack": autoattack, "autoattack_quick": autoattack_quick,
    "cam": cam, "cam_quick": cam_quick, "gpu": gpu, "gpu_quick": gpu_quick,
    "perceptual": perceptual, "perceptual_quick": perceptual_quick,
    "pipeline": pipeline, "pipeline_quick": pipeline_quick,
    "training": training, "training_xla": training_xla, "training_quick": training_quick,
    "loader": loader, "loader_memory": loader_memory, "loader_quick": loader_quick,
}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  """The preset named after the ``:`` of ``--config``.

  Without a preset (``benchmark.py`` alone) the config has ``benchmark=""``, which validation
  refuses with a message listing the presets: there is no default benchmark.

  Raises:
    ValueError: an unknown preset (the message lists the presets).
  """
  if not preset:
    return _base("")
  return configs.select(PRESETS, preset, "")
