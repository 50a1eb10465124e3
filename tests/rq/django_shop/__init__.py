"""A minimal Django project for the django-rq test: settings and one app.

The app turns jobtrace on in ``AppConfig.ready()``, the setup that
docs/rq.md describes for django-rq.
"""
