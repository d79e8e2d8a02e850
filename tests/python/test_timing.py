"""smoothflow_torch.timing.median_seconds, shared by the benchmarks and the LJ13 study."""
import time

from smoothflow_torch.timing import median_seconds


def test_median_seconds_calls_warmup_then_repeats_and_times_them():
    calls = []
    assert median_seconds(lambda: calls.append(1), repeats=5, warmup=3) >= 0
    assert len(calls) == 8
    # a call that sleeps 5 ms takes at least that long, and not a hundred times longer
    t = median_seconds(lambda: time.sleep(0.005), repeats=3, warmup=0)
    assert 0.005 <= t < 0.5
