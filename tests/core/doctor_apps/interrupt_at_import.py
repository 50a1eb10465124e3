"""An application module that raises KeyboardInterrupt at import."""

raise KeyboardInterrupt
