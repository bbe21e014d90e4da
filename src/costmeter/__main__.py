"""``python -m costmeter``: the ``costmeter`` command."""

from costmeter.cli import main

raise SystemExit(main())
