"""Use cases over the domain and the ports: adding, executing, resuming tasks."""
