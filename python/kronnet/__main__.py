"""`python -m kronnet ...` is the `kronnet` command."""

from .cli import main

raise SystemExit(main())
