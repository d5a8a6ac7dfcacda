"""Development tools: the demo, the benchmark, the synthetic warehouse and the test servers.

Installed with the repo for development (``make venv``: ``pip install -e .``) and never copied
into the Airflow image (docker/airflow.Dockerfile copies dags/, plugins/ and sql/ only), so a
deployment carries none of it. The production package ``mlbatch`` never imports this one except
lazily, inside the development commands ``mlbatch demo`` and ``mlbatch bench``
(:func:`mlbatch.cli.commands.demo.import_devtools`), and an import-linter contract keeps it so.
"""
