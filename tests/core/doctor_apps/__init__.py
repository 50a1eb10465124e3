"""Application modules that ``jobtrace doctor --app`` imports in the tests."""
