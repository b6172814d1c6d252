"""Class activation maps via autodiff, and agreement of maps with perturbations and regions.

Model level (one jitted forward + backward per batch; see :mod:`percadv_jax.cam.model`)::

  maps = cam.grad_cam(module, variables, x)              # [N, H, W] in [0, 1], predicted class
  maps = cam.compute_cam("layer_cam", module, variables, x, layer="block_16", target=y)

Every function taking ``(module, variables, x)`` checks them first
(:func:`percadv_jax.cam.model.check_model_arguments`: a Flax module instance; variables whose
shapes are those ``module.init`` gives, else the first mismatching path and both shapes are named;
float ``[N,H,W,C]`` images in [0, 1]), then ``layer`` (a str naming a tap) and ``target`` (an int or
int ``[N]`` in ``[0, num_classes)``), raising a TypeError or ValueError that names the argument.

Array level (:mod:`percadv_jax.cam.core`): ``grad_cam_map(A, G)`` etc. from activations and
gradients ``[N, h, w, K]``; ``postprocess(raw, size=(H, W))``.

Metrics (:mod:`percadv_jax.cam.metrics`): ``agreement(perturbation_map, saliency_map,
region=mask)``, ``top_k_energy(m, saliency, fraction=0.1)`` (share of a map's energy in the
saliency map's top-k% region; chance = k%) and the perturbation maps
``perturbation_magnitude(d)``, ``dissimilarity_map``.

Sanity checks (:mod:`percadv_jax.cam.sanity`): cascading model randomisation
(``layer_order``, ``layers_after``, ``randomize_layers``, ``randomize_top_layers``), smooth
random maps (``smooth_random_maps``, ``spatial_autocorrelation``, ``matched_sigma``) and deletion
curves (``deletion_curve``, ``curve_auc``).
Figures: ``plot_maps(images, cams, perturbation_maps=..., dissimilarity_maps=...,
path=...)``.
"""

from percadv_jax.cam.core import (
    GRADIENT_METHODS,
    METHODS,
    class_activation_map,
    grad_cam_map,
    grad_cam_pp_map,
    grad_cam_pp_weights,
    grad_cam_weights,
    gradient_cam_map,
    hires_cam_map,
    layer_cam_map,
    minmax_scale,
    postprocess,
    resize_bilinear,
    score_cam_weights,
    weighted_sum,
    xgrad_cam_map,
    xgrad_cam_weights,
)
from percadv_jax.cam.figures import overlay, plot_maps
from percadv_jax.cam.metrics import (
    agreement,
    dissimilarity_map,
    energy_in_region,
    pearson,
    perturbation_magnitude,
    pointing_game,
    rank_average,
    roc_auc,
    spearman,
    top_k_energy,
    top_k_iou,
    top_k_size,
    top_k_weights,
)
from percadv_jax.cam.model import (
    cam,
    compute_cam,
    grad_cam,
    grad_cam_pp,
    hires_cam,
    layer_cam,
    model_info,
    resolve_layer,
    score_cam,
    tap_names,
    xgrad_cam,
)
from percadv_jax.cam.sanity import (
    curve_auc,
    deletion_curve,
    layer_order,
    layers_after,
    matched_sigma,
    randomize_layers,
    randomize_top_layers,
    smooth_random_maps,
    spatial_autocorrelation,
)
