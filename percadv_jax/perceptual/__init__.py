"""Perceptual (SSIM) quality ball: SSIM, the convex constraint set, its solvers and the attack.

Public names: ``ssim``, ``QualityBall``, ``solve_linear_cvxpy``, ``project_cvxpy``,
``solve_linear``, ``ssim_attack`` (see DESIGN.md, "The perceptual quality ball").
"""

from percadv_jax.perceptual.ball import ProjectionInfo, QualityBall
from percadv_jax.perceptual.cvx import project_cvxpy, solve_linear_cvxpy
from percadv_jax.perceptual.ssim import ssim
from percadv_jax.perceptual.solver import solve_linear
from percadv_jax.perceptual.attack import ssim_attack
