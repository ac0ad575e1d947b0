"""resilient-task benchmark: ``python -m bench --json out.json`` (see docs/benchmarks.md).

A script, not a test: it measures add throughput, end-to-end throughput, trigger-to-start
latency, scheduled lateness, worker memory and the database's commit ceiling, prints a table
and writes the numbers as JSON. Every section runs in a fresh PostgreSQL schema and a fresh
Kafka topic namespace and consumer group, and cleans up after itself.
"""
