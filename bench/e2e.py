"""End-to-end benchmark: a dataset stream through `understudy serve` with the real openai client.

Prints and writes (bench/results/e2e.json) calls until the first switch, final coverage,
agreement of student answers with the teacher and with gold vs the teacher's own gold accuracy,
p50/p99 latency of student- and teacher-answered calls end to end over HTTP, and teacher calls
and cost avoided. Same as `understudy bench e2e`; run with --help for the knobs.

    .venv/bin/python bench/e2e.py --dataset rt-sentiment --calls 5000
"""

import sys

from understudy.cli import app

if __name__ == "__main__":
    app(["bench", "e2e", *sys.argv[1:]])
