"""The worker, in three parts: ``pump`` (hello, the exchange loop, lease bookkeeping),
``page`` (one lease to one outcome: middlewares, fetch, callback, pipelines, items) and
``links`` (the sent-set and politeness keys of the requests pages yield).

``python -m spiderfarm.worker --connect HOST:PORT`` runs one (see ``__main__``).
"""

from __future__ import annotations

from .links import Links
from .page import PageRunner
from .pump import Crawl, Worker
from .result import PageResult

__all__ = ["Crawl", "Links", "PageResult", "PageRunner", "Worker"]
