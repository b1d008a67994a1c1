"""``python -m spiderfarm``: the command line."""

from .cli import main

raise SystemExit(main())
