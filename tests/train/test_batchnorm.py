"""Precise BatchNorm statistics equal the population statistics, whatever the momentum."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from percadv_jax.train import batchnorm


class _Net(nn.Module):
  @nn.compact
  def __call__(self, x, train=False):
    h = nn.Dense(5, name="dense")(x.reshape(x.shape[0], -1))
    h = nn.BatchNorm(use_running_average=not train, momentum=0.97, epsilon=1e-3, name="bn")(h)
    return nn.Dense(2, name="head")(nn.relu(h))


def test_recalibrate_gives_population_mean_and_variance():
  net = _Net()
  rng = np.random.default_rng(0)
  x = (rng.normal(size=(4, 16, 2, 2, 3)) * 2 + 1).astype(np.float32)  # 4 batches of 16
  variables = net.init(jax.random.PRNGKey(0), jnp.asarray(x[0]))
  stats = batchnorm.recalibrate(net.apply, variables["params"], variables["batch_stats"],
                                [jnp.asarray(b) for b in x])
  p = variables["params"]["dense"]
  h = x.reshape(64, -1) @ np.asarray(p["kernel"]) + np.asarray(p["bias"])
  np.testing.assert_allclose(stats["bn"]["mean"], h.mean(0), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(stats["bn"]["var"], h.var(0), rtol=1e-3, atol=1e-4)
  assert batchnorm.recalibrate(net.apply, variables["params"], {}, []) == {}
