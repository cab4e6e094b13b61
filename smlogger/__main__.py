import gc

# Importing the CLI (peewee, the store, the pipeline: ~30,000 objects that live as long as
# the process, none of them garbage) would set off some 50 collections that find nothing,
# ~7 ms of every start; the collector is back on before any command runs.
gc.disable()
try:
    from smlogger.cli import console
finally:
    gc.enable()

raise SystemExit(console())
