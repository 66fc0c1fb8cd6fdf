import os
import sys

# Shared helpers (tests/_gradcheck.py, tests/_models.py,
# tests/_refmodel.py) import by name under
# --import-mode=importlib.
sys.path.insert(0, os.path.dirname(__file__))
