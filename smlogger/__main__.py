from smlogger.cli import console

raise SystemExit(console())
