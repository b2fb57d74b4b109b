"""``python -m pacnd ...``: the same as the ``pacnd`` command (see :mod:`pacnd.cli`)."""

from .cli import main

raise SystemExit(main())
