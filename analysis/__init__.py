"""What finished runs say: run directories read into cells, the paper's numbers beside them, tables,
figures, flatness and beyond-test-error measurements.

The library of the commands in ``scripts/`` (and of the quickstart's Hydra callback). Not installed: it
runs from the repository root like ``models/`` and ``data/``, and needs the ``[analysis]`` extra.
"""
