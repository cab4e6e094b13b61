from smlogger.cli import main

raise SystemExit(main())
