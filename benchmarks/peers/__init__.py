"""``python -m benchmarks.peers``: pushpop beside the queues an application might use instead.

One module per system; each measures the same workload (see :mod:`.common`), and the run
writes docs/peers.md and docs/peers.png. The peers' packages are the ``peers`` extra.
"""
