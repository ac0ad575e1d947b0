"""Kept for existing imports: the suite ships as ``resilient_task.testing``."""

from resilient_task.testing.task_dao_contract import *  # noqa: F403
from resilient_task.testing.task_dao_contract import __all__ as __all__
