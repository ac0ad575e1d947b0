"""resilient-task."""
