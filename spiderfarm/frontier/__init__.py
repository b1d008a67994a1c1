"""The crawl state the server holds, in three parts along the lease protocol: ``core``
(``Frontier``: the lock, the public API, dedup, outcomes, retries, items, limits, the
journal's ops), ``hosts`` (each host's queue and timing, and the scheduler that picks
the next host) and ``leases`` (the lease table, deadlines and worker liveness).
robots.txt decisions are ``politeness.Robots``'.

A plain object guarded by one lock (the manager serves every connection on its own
thread). No sockets and no pickling here: ``server.py`` exposes it, workers feed it.

Protocol (all plain data, see ``protocol.py``):

* ``push([(fp, host, wire), ...])`` queues new requests, dropping seen fingerprints,
  offsite hosts and requests past the depth limit.
* ``exchange(worker, outcomes, want)`` applies a batch of outcomes atomically and leases
  up to ``want`` new requests in the same round trip. An outcome is
  ``(lease_id, kind, reason, new_requests, items, info)`` with ``kind`` one of
  ``ok``, ``skip`` (done, not fetched), ``close``, ``fail``, ``retry``,
  ``release`` or ``robots``; items are JSON lines.
"""

from __future__ import annotations

from .core import Frontier

__all__ = ["Frontier"]
