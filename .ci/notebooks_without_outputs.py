"""Fail when a notebook given on the command line is stored with outputs (a pre-commit hook;
tests/test_notebooks.py checks the same in the suite). Clear them with Jupyter's "Clear All Outputs"
or `jupyter nbconvert --clear-output --inplace <notebook>`."""

import json
import sys

stored_with_outputs = [
    path
    for path in sys.argv[1:]
    if any(
        cell.get("outputs") or cell.get("execution_count")
        for cell in json.load(open(path))["cells"]
        if cell["cell_type"] == "code"
    )
]
for path in stored_with_outputs:
    print(f"{path} is stored with outputs: clear them before committing")
sys.exit(1 if stored_with_outputs else 0)
