"""``python -m spiderfarm``: the command line."""

import sys

from .prespawn import prespawn

prespawn(sys.argv[1:])  # crawl's workers import while this process does (see prespawn)

from .cli import main  # noqa: E402

raise SystemExit(main())
