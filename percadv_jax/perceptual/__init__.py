"""Perceptual (SSIM) quality ball: SSIM, the convex constraint set, its solvers and the attack.

Public names: ``ssim``; the constraint set ``QualityBall``; the JAX solvers ``solve_linear``
(the linear program over the ball) and ``project`` (the Euclidean projection onto it), with their
``ProjectionInfo`` report and warm-start ``AdmmState``; the CVXPY references
``solve_linear_cvxpy`` and ``project_cvxpy``; the attack ``ssim_attack``. The mathematics and the
solver's design are in ``docs/perceptual.md``.
"""

from percadv_jax.perceptual.admm import AdmmState, ProjectionInfo
from percadv_jax.perceptual.ball import QualityBall
from percadv_jax.perceptual.cvx import project_cvxpy, solve_linear_cvxpy
from percadv_jax.perceptual.ssim import ssim
from percadv_jax.perceptual.solver import init_state, project, solve_linear
from percadv_jax.perceptual.attack import ssim_attack
