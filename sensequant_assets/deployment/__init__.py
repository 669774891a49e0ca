"""How SenseQuant runs on Dagster's deployment parts, apart from the domain: the dev server wrapper
(`make run`), the forking run launcher and its fork server, and the SQLite event log that keeps its
engines. `deploy/dagster.yaml` names these modules."""
