import os
import sys

# Shared helpers (tests/_gradcheck.py, tests/_models.py,
# tests/_refmodel.py) import by name under
# --import-mode=importlib.
sys.path.insert(0, os.path.dirname(__file__))

# Hypothesis profiles of the API fuzzer (tests/test_fuzz_api.py), chosen with
# FASTBP_FUZZ_PROFILE: "ci" (default) is derandomized, the same cases on every run,
# in about 30 s; "long" draws new cases each run, 20 times as many (the test module
# scales max_examples). Other hypothesis tests keep their own settings.
from hypothesis import HealthCheck, settings  # noqa: E402

_FUZZ_CHECKS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile(
    "fuzz-ci", derandomize=True, deadline=None, database=None, suppress_health_check=_FUZZ_CHECKS
)
settings.register_profile(
    "fuzz-long", deadline=None, print_blob=True, suppress_health_check=_FUZZ_CHECKS
)
