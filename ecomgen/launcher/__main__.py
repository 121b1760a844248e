"""``python -m ecomgen.launcher --repository DIR``: the launcher without the build step."""

from ecomgen.launcher.supervisor import main

raise SystemExit(main())
