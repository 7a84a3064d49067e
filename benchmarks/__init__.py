"""Performance suite: prints figures and ratios measured side by side in one run.

Run with ``make bench`` or ``python -m benchmarks [analysis|extraction|all] [--quick]``.
Never a timed unit test: machines are shared and noisy, so only ratios within one run count.
"""
