"""Scale-out with JAX's own engine: device meshes with named axes (``ensemble``, ``batch``, ``space``),
``NamedSharding`` of states, ensembles, batches and parameters, sharded ensembles, and several hosts through
``jax.distributed`` (:mod:`nemic.parallel.distributed`). See ``docs/scaling.md``.

Training on a mesh is the one training loop: ``nemic.train.loop.fit(..., mesh=make_mesh(batch=-1))``.
"""

from nemic.parallel.distributed import initialize, is_writer, process_count, process_index, sync
from nemic.parallel.ensemble import gather, sharded_ensemble_rollout
from nemic.parallel.mesh import (AXES, batch_sharding, check_divides, make_mesh, member_sharding, replicate,
                                 replicated, shard_batch, shard_members)

__all__ = ["AXES", "batch_sharding", "check_divides", "gather", "initialize", "is_writer", "make_mesh",
           "member_sharding", "process_count", "process_index", "replicate", "replicated", "shard_batch",
           "shard_members", "sharded_ensemble_rollout", "sync"]
