"""Multi-process fault tests: several ``resilient-task worker`` processes, thousands of tasks.

Each test starts at least three workers (separate OS processes running
``tests.integration.faults.worker_app:app``) against its own PostgreSQL schema and Kafka topic
namespace, injects a fault (kill -9, broker stop, database restart, forged messages) and
checks, from records the handler writes outside the store, that every task ran to DONE and how
often each ran.
"""
