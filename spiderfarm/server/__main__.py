"""``python -m spiderfarm.server``: the cli's server entry point."""

from ..cli import server_main

raise SystemExit(server_main())
