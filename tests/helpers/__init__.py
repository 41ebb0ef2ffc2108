"""Helpers shared by the test suites: fixture types, bearer tokens, served processes, stores."""
