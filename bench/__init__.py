"""Performance measurements of the toolkit, each a ratio measured side by side in one run.

    python -m bench [--quick]      table on stdout, bench/latest.json, a line in bench/history.jsonl

See bench/README.md for what each figure means and the latest numbers.
"""
