"""Engine: scheduling, executors, caching, retries, resume."""
