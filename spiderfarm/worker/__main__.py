"""``python -m spiderfarm.worker``: the cli's worker entry point."""

from ..cli import worker_main

raise SystemExit(worker_main())
