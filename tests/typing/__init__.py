"""Code that only mypy runs: the typing promises of the ports (see tests/unit/test_typed_ports)."""
