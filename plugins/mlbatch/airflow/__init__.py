"""The Airflow adapters: the pipeline's declaration and everything that turns it into DAGs.

``pipeline`` declares every step once; ``dag_factory`` builds the DAGs from it at parse time
(light imports only), ``operators`` runs a step in a worker, ``callbacks`` alerts on failures,
``approval`` and ``ui`` are the promotion's human gate and its plugin page, ``pools`` sizes and
creates the shared pools.
"""
