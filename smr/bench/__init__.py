"""Cluster benchmarks (`smr bench cluster`, `smr bench compare`): one client harness that drives
smr, pysyncobj and raw loopback references through the same `submit(payload) -> future` adapters,
from a process of its own, and reports throughput and latency per system, mode and payload.

* `smr.bench.stats`: percentiles and rates from per-command latencies;
* `smr.bench.harness`: the bounded-window driver (`drive`) that measures one workload;
* `smr.bench.frames`: a length-prefixed request/reply protocol over TCP, its client and the raw
  echo server used as the physical reference;
* `smr.bench.pysyncobj_ref`: three pysyncobj replicas of a BlobLog equivalent, each behind a
  frame server (needs the `bench` extra);
* `smr.bench.adapters`: the client-process side of each system (`smr_submitter` is the one
  function to adjust if the smr client API changes);
* `smr.bench.client`: `python -m smr.bench.client SPEC_JSON`, one workload, JSON on stdout;
* `smr.bench.run`: starts the systems, runs the client per workload, failover, table and plot.
"""
