"""The graph: the DAG of a flow's steps (validated, topologically ordered), their code
fingerprints and normalized sources.

Layer: graph. It may import ``nbflow.definition`` and the layers below it (the store's
records, values, errors); never the engine, the facades or anything above.
"""
