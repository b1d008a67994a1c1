"""``python -m spiderfarm.worker``: see ``spiderfarm.worker.main``."""

from .main import worker_main

raise SystemExit(worker_main())
