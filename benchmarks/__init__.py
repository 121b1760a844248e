"""Load tests, baseline server, roofline and tuning for the served models (see README.md)."""
