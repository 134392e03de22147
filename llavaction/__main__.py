"""`python -m llavaction <command>`: the same as the `llavaction` console command."""

from llavaction.cli.console import main

raise SystemExit(main())
