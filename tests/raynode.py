"""A worker node for a local test Ray cluster, joined on loopback.

``ray start`` refuses to add a node while ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (which is
what keeps a local cluster on 127.0.0.1), so this starts the node the way Ray's own
``ray.cluster_utils`` does for its multi-node tests: a ``ray._private.node.Node`` with
``head=False``. Runs until SIGTERM or SIGKILL (``tests.raycluster.RayNode`` ends it).

    python -m tests.raynode --address 127.0.0.1:PORT --num-cpus 2
"""

from __future__ import annotations

import argparse
import signal
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--num-cpus", type=int, required=True)
    args = parser.parse_args()

    import ray._private.node
    import ray._private.parameter

    params = ray._private.parameter.RayParams(
        gcs_address=args.address,
        node_ip_address="127.0.0.1",
        num_cpus=args.num_cpus,
        num_gpus=0,
        include_log_monitor=False,
        node_manager_port=0,
        min_worker_port=0,
        max_worker_port=0,
        object_store_memory=200 * 1024 * 1024,
    )
    ray._private.node.Node(params, head=False, shutdown_at_exit=True, spawn_reaper=False)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # exit runs the node's atexit shutdown
    print("Ray runtime started (worker node)", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
