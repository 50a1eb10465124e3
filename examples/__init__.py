"""Example applications that use jobtrace, each described in its docstring."""
