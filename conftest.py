"""Makes the project's top-level packages importable in tests."""
