"""Locust load tests, the stack runner they use, and their pass/fail gate."""
