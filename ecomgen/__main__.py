from ecomgen.cli import main

raise SystemExit(main())
