"""A Flask shop whose requests enqueue jobs on Celery, RQ and Dramatiq.

``POST /orders`` enqueues one job on each host: a receipt on Celery, a
stock reservation on RQ and a warehouse notice on Dramatiq. ``app.py`` is
the web process, and each host's module is both what the web process
imports to enqueue and what that host's worker loads.

``python -m examples.flask_shop``, run from the repository root, starts an
embedded Redis server, the three workers and the app on 127.0.0.1, sends a
few requests and prints the traces of each request.
"""
