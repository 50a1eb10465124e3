"""Overhead of jobtrace per job, against the instrumentations users pick instead.

``nox -s bench`` runs :mod:`benchmarks.run`, which prints a table and
rewrites BENCHMARKS.md.
"""
