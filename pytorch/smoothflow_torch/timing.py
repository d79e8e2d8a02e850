"""Wall-clock timing of one call, shared by the benchmarks and the studies that report speed."""
import time

import numpy as np


def median_seconds(fn, repeats: int, warmup: int = 1) -> float:
    """Median seconds per call of ``fn()`` over ``repeats`` calls, after ``warmup`` untimed calls
    (allocations, caches)."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return float(np.median(samples))
