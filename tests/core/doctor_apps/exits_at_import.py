"""An application module that ends its process at import."""

import os

os._exit(0)
