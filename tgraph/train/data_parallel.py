"""Data-parallel training on JAX: each batch sharded over a ``jax.sharding.Mesh`` of
devices, parameters and optimizer state replicated, gradients averaged by XLA.

The step is one jitted function: the lowered graph's loss, ``jax.value_and_grad``, global
norm clipping and the optimizer's pure ``update``. Because the loss is a mean over the
global batch and the batch is laid out along the mesh's ``data`` axis, XLA's partitioner
turns the parameter gradients into per-device partial sums and one all-reduce; nothing
here writes a collective by hand. The same code runs on one host with several GPUs, or on
several hosts once ``jax.distributed.initialize`` has joined them (then every process
builds the same global batch and keeps only its devices' rows).
"""

from __future__ import annotations

import numpy as np

from tgraph.autodiff import trainable_params
from tgraph.errors import BackendError, TGraphError
from tgraph.execute import check_feeds, check_int_ranges
from tgraph.io import check_weights
from tgraph.ir import Graph
from tgraph.lower.jax import load_jax, to_jax
from tgraph.train.loop import Trainer


def initialize_distributed(coordinator=None, num_processes=None, process_id=None) -> None:
    """Join this process to the others (several hosts): arguments left None are found
    from the cluster (SLURM, Open MPI, Kubernetes) or JAX_COORDINATOR_ADDRESS."""
    load_jax().distributed.initialize(coordinator, num_processes, process_id)


def device_mesh(devices: int | None = None):
    """A one-axis mesh ("data") over the first ``devices`` devices JAX sees (all by default)."""
    jax = load_jax()
    found = jax.devices()
    n = devices or len(found)
    if n > len(found):
        hint = (": on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N before starting "
                "gives N" if found[0].platform == "cpu" else "")
        raise BackendError(f"{n} devices asked for, but JAX sees {len(found)} "
                           f"({found[0].platform}){hint}")
    return jax.sharding.Mesh(np.array(found[:n]), ("data",))


class DataParallelTrainer(Trainer):
    """``Trainer``'s interface (step, fit, save, host_params) on a JAX device mesh."""

    def __init__(self, graph: Graph, params: dict, optimizer, clip: float = 1.0,
                 loss: str = "loss", devices: int | None = None):
        jax = self._jax = load_jax()
        from jax.sharding import NamedSharding
        from jax.sharding import PartitionSpec as P

        check_weights(graph, params)
        self.graph, self.loss, self.optimizer, self.clip = graph, loss, optimizer, clip
        self.step_count = 0
        self.mesh = device_mesh(devices)
        self.n_devices = self.mesh.size
        self._replicated = NamedSharding(self.mesh, P())
        self._rows = NamedSharding(self.mesh, P("data"))
        self.wrt = trainable_params(graph, loss)
        forward = to_jax(graph)
        dtype = {p.name: jax.dtypes.canonicalize_dtype(p.dtype) for p in graph.params}
        self.params = {k: self._put(np.asarray(params[k], dtype=t), self._replicated)
                       for k, t in dtype.items()}
        self.state = jax.tree.map(lambda a: self._put(np.asarray(a), self._replicated),
                                  optimizer.init({k: params[k] for k in self.wrt}))

        def step(params, state, feeds, lr):
            def loss_of(trained):
                return forward({**params, **trained}, feeds)[loss]

            value, grads = jax.value_and_grad(loss_of)({k: params[k] for k in self.wrt})
            if clip:  # one global norm over every gradient, as clip_grad_norm
                norm = sum((g * g).sum() for g in grads.values()) ** 0.5
                scale = jax.numpy.where(norm > clip, clip / (norm + 1e-12), 1.0)
                grads = {k: g * scale.astype(g.dtype) for k, g in grads.items()}
            new, state = optimizer.update(params, grads, state, lr)
            return {**params, **new}, state, value

        # donated buffers are reused in place on GPU/TPU; XLA's CPU client cannot, and warns
        donate = (0, 1) if jax.default_backend() != "cpu" else ()
        self._step = jax.jit(step, out_shardings=(self._replicated,) * 3, donate_argnums=donate)

    def _put(self, a: np.ndarray, sharding):
        # from the same host array on every process, each keeps its own devices' part
        return self._jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx])

    def shard_batch(self, feeds: dict) -> dict:
        """Feeds split along their first axis (the batch) over the mesh."""
        check_feeds(self.graph, feeds)
        check_int_ranges(self.graph, feeds)
        out = {}
        for name, a in feeds.items():
            a = np.asarray(a)
            if a.ndim == 0:
                out[name] = self._put(a, self._replicated)
                continue
            if a.shape[0] % self.n_devices:
                raise TGraphError(f"feed {name!r}: a batch of {a.shape[0]} does not split evenly "
                                  f"over {self.n_devices} devices; make the batch a multiple "
                                  f"of {self.n_devices}")
            out[name] = self._put(a, self._rows)
        return out

    def step(self, feeds: dict) -> float:
        """One sharded forward+backward pass and update; returns the loss before it."""
        self.params, self.state, value = self._step(self.params, self.state,
                                                    self.shard_batch(feeds), self.optimizer.lr)
        self.step_count += 1
        return float(_local(value))

    def host_params(self) -> dict[str, np.ndarray]:
        return {k: _local(a) for k, a in self.params.items()}

    def save(self, path) -> None:
        if self._jax.process_index() == 0:  # replicated: one process writes
            super().save(path)


def _local(a) -> np.ndarray:
    """A replicated array's value from this process's first device (multi-host safe)."""
    return np.asarray(a.addressable_data(0))

