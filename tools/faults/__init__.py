"""The catalogue of faults that ``tools/reliability.py`` runs and ``tests/tools/test_fault_catalogue.py`` tests.

Each entry is a small situation set up in a temporary folder with tiny models (``MLP(64, 10, hidden=(16,))``,
``SmallCNN(1, 10, widths=(4, 8, 8))``), the digits data and copies of the Fashion-MNIST files, and triggered through
the Python API or ``lightning-kd`` in-process: ``@fault(category, expect=<regex of the message>, bad=<tokens naming
the problem>, ...)``. ``harness.py`` says how an entry is run and judged; ``setups.py`` holds what entries share;
``values.py``, ``files.py``, ``text.py``, ``stores.py``, ``runs.py``, ``commands.py`` and ``probes.py`` hold the
entries, in the report's order.
"""

from tools.faults import commands, files, probes, runs, stores, text, values
from tools.faults.harness import CATALOGUE, Fault, Record, run_fault

_ORDER = [m.__name__ for m in (values, files, text, stores, runs, commands, probes)]
CATALOGUE.sort(key=lambda f: _ORDER.index(f.setup.__module__))  # stable: each module's own order is kept

__all__ = ["CATALOGUE", "Fault", "Record", "run_fault"]
