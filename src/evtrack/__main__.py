"""``python -m evtrack``: the same as the ``evtrack`` command."""

from evtrack.cli import main

raise SystemExit(main())
