"""A sharded robust-accuracy evaluation (random-start FGSM) of the tiny CNN, by 1 or N processes.

Run as ``python -m tests.parallel._distributed_eval --out F [--coordinator H:P --num_processes N
--process_id I]``; process 0 writes ``F`` (JSON: the per-example outputs of
``parallel.map_examples``, among them the adversarial images, gathered from every process, and
the device/process counts). ``compute()`` is the same evaluation in-process.
"""

from __future__ import annotations

import argparse

BATCH_SIZE = 8
NUM_EXAMPLES = 21
EPS = 0.05


def compute() -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax

  from percadv_jax import attacks, parallel
  from tests.parallel import _tiny

  module, variables = _tiny.init_variables(seed=0)
  data = _tiny.toy_data(NUM_EXAMPLES, seed=1)

  def per_example(v, batch, key):
    x, y = batch["image"], batch["label"]
    logits_fn = lambda z: module.apply(v, z, train=False)  # noqa: E731
    x_adv = attacks.fgsm(logits_fn, x, y, key=key, eps=EPS, random_start=True)
    logits = logits_fn(x)
    return {"clean": (jnp.argmax(logits, -1) == y).astype(jnp.float32),
            "robust": (jnp.argmax(logits_fn(x_adv), -1) == y).astype(jnp.float32),
            "loss": optax.softmax_cross_entropy_with_integer_labels(logits, y),
            "x_adv": x_adv}

  out = parallel.map_examples(per_example, variables, data, batch_size=BATCH_SIZE,
                              key=jax.random.PRNGKey(7))
  return {"outputs": {k: np.asarray(v).tolist() for k, v in out.items()},
          "process_count": jax.process_count(), "device_count": jax.device_count()}


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--out", required=True)
  ap.add_argument("--coordinator", default=None)
  ap.add_argument("--num_processes", type=int, default=None)
  ap.add_argument("--process_id", type=int, default=None)
  a = ap.parse_args()
  from percadv_jax import parallel
  parallel.initialize(coordinator_address=a.coordinator, num_processes=a.num_processes,
                      process_id=a.process_id, timeout_s=60)
  result = compute()
  if parallel.is_main_process():
    from percadv_jax import io
    io.write_json(a.out, result)
  parallel.sync("done")


if __name__ == "__main__":
  main()
