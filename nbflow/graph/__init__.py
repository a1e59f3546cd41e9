"""Graph: the DAG of steps, its validation, and code fingerprints."""
