"""Empty: the contract suites ship as ``resilient_task.testing.*_contract``.

Kept only because ``make test-unit`` still names ``tests/contract``.
"""
