"""One host of a two-process JAX "slice" on CPU: build an eval set's tagged examples under the global
mesh, as Levanter's trainer does, and stack them on the host's CPU, as its data loader does.

    python tests/levanter_tags_host.py PROCESS_ID COORDINATOR_PORT APPLY_FIX(0|1)
"""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")
process_id, port, fix = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id)

import haliax as hax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh  # noqa: E402
from levanter.data import ListAsyncDataset  # noqa: E402
from levanter.data.loader import stack_tree  # noqa: E402
from levanter.eval import DomainTaggedDataset  # noqa: E402
from levanter.utils.jax_utils import local_cpu_mesh  # noqa: E402

if fix:
    from steps.training import levanter_fixes

    levanter_fixes.apply()

mesh = Mesh(np.array(jax.devices()), ("data",))
with hax.partitioning.set_mesh(mesh):  # the trainer's global mesh: 4 devices over 2 processes
    tagged = DomainTaggedDataset([(ListAsyncDataset([np.arange(4, dtype=np.int32)] * 2), ["validation"])])
    examples = [tagged.as_sync_dataset()[i] for i in range(2)]
    with local_cpu_mesh():
        batch = stack_tree("batch", examples)
print(f"process {process_id}: stacked tokens {batch[0].shape} tags {batch[1].shape}", flush=True)
