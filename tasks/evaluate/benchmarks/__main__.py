"""python -m tasks.evaluate.benchmarks (see the package docstring)."""

from tasks.evaluate.benchmarks import main

main()
