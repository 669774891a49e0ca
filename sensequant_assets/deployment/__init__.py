"""How SenseQuant runs on Dagster's deployment parts, apart from the domain: the dev server wrapper
(`make run`), the forking run launcher and its fork server, the SQLite event log that keeps its
engines (all three named by `deploy/dagster.yaml`), and the choice of executor (`executors.py`,
`SENSEQUANT_EXECUTOR`; Celery on more than one machine, `deploy/scaleout/`)."""
