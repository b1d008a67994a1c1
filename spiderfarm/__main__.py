"""``python -m spiderfarm``: the command line."""

import sys

from .prespawn import prespawn

prespawn(sys.argv[1:])  # crawl forks its workers before it imports the server (see prespawn)

from .cli import main  # noqa: E402

raise SystemExit(main())
