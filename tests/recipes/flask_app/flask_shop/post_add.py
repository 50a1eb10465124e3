"""Send one request to the view that enqueues a task, and print the task id."""

from flask_shop import create_app

if __name__ == "__main__":
    response = create_app().test_client().post("/add")
    print(response.get_json()["id"])
