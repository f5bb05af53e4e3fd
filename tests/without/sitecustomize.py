"""Imported at start-up by a Python whose PYTHONPATH holds this folder: the modules named in
$VAE_ZOO_TEST_WITHOUT (comma-separated) then fail to import, as if they were not installed."""

import os
import sys

for name in filter(None, os.environ.get("VAE_ZOO_TEST_WITHOUT", "").split(",")):
    sys.modules[name] = None  # `import name` now raises ImportError
