#!/usr/bin/env python3
"""Put the tables of a benchmark run into README.md, between <!-- bench:start --> and <!-- bench:end -->.

    python bench/update_readme.py [bench/results/latest.json]
"""

import json
import sys
from pathlib import Path

from reload import ROOT, report

results = json.loads(Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "bench/results/latest.json").read_text())
readme = ROOT / "README.md"
text = readme.read_text()
start, end = text.index("<!-- bench:start -->"), text.index("<!-- bench:end -->")
readme.write_text(text[:start] + "<!-- bench:start -->\n" + report(results) + "\n" + text[end:])
print(f"updated {readme}")
