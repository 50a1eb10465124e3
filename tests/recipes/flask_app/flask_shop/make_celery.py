"""The module that ``celery -A flask_shop.make_celery worker`` loads."""

from flask_shop import create_app

flask_app = create_app()
celery_app = flask_app.extensions["celery"]
