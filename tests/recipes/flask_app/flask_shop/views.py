"""The view that enqueues a task from a request."""

from flask import Blueprint

from . import tasks

blueprint = Blueprint("shop", __name__)


@blueprint.post("/add")
def start_add() -> dict[str, str]:
    return {"id": tasks.add.delay(2, 3).id}
