"""``python -m ecomgen_client``: same as the ``ecomgen-client`` script."""

from .cli import main

raise SystemExit(main())
