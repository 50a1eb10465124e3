"""An RQ settings module, as `rq worker -c` loads it."""

import jobtrace_rq

jobtrace_rq.instrument()

REDIS_URL = "redis://127.0.0.1:6379/0"
