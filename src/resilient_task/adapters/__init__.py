"""Adapters: the only place that touches drivers (SQLAlchemy, psycopg, aiokafka) or the OS."""
