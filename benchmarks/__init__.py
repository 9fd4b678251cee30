"""Benchmarks of tokenkeeper and its development environment, run on loopback.

``benchmarks.run`` (``make bench``) measures the operator itself: time to a
Secret, sustained refresh, memory and CPU, and the same work done by a bare
client loop as a floor. Its helpers each own one thing: ``fast_endpoint`` (a
token endpoint quick enough not to be the bottleneck), ``secret_watch`` (when
Secrets change, seen through a watch), ``probes`` (counters read from the API
server, /proc and the machine), ``floor`` and ``profiling``.
"""
