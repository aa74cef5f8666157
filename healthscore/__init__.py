"""The composition root: the `healthscore` command (cli.py), the one-machine dev stack (dev.py)
and the broker and PostgreSQL processes it and the tests start (devstack.py). It builds the
services from `services/` and `shared/`; nothing there imports it."""
