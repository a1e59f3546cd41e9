"""Definition: flows and steps, from decorators (and cell magics)."""
