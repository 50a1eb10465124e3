"""A Flask app with Celery in the app-factory pattern, as docs/recipes.md shows."""

import os
from typing import Any

from celery import Celery, Task
from flask import Flask

import jobtrace_celery


def celery_init_app(app: Flask) -> Celery:
    """Create the Celery app from the Flask app's ``CELERY`` settings."""

    class FlaskTask(Task):  # type: ignore[misc]
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            with app.app_context():
                return self.run(*args, **kwargs)

    jobtrace_celery.instrument()
    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(app.config["CELERY"])
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app


def create_app() -> Flask:
    """Build the Flask app and its Celery app, configured from the environment."""
    app = Flask(__name__)
    app.config.from_mapping(
        CELERY={
            "broker_url": os.environ["TEST_BROKER_URL"],
            "task_default_queue": os.environ["TEST_QUEUE"],
            "task_ignore_result": True,
            "broker_connection_retry_on_startup": True,
            "worker_hijack_root_logger": False,
        }
    )
    celery_init_app(app)

    from . import views

    app.register_blueprint(views.blueprint)
    return app
