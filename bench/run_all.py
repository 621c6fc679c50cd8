#!/usr/bin/env python3
"""`make bench`: every benchmark in this folder, one after another (see README.md)."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for script in ("bench_validation.py", "bench_indexing.py", "fhir_bench.py"):
    print(f"\n## {script}\n", flush=True)
    subprocess.run([sys.executable, str(HERE / script)], check=True)
