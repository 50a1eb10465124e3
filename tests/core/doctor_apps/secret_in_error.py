"""An application module whose import error quotes a URL with a password."""

raise RuntimeError("cannot reach redis://worker:hunter2@127.0.0.1:6379/0 " + "x" * 2000)
