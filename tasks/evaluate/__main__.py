"""``python -m tasks.evaluate --format tis``: the evaluate stage (see tasks/evaluate/__init__.py)."""

from tasks.evaluate import main

main()
