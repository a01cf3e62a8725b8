"""PeakMemory: the peak of one span of code, not the process's lifetime peak."""

from __future__ import annotations

import pytest

from tuneforge.core.memory import PeakMemory, current_memory_mb, peak_memory_mb

MB = 1_000_000


def touch(size_mb: int) -> bytearray:
    """``size_mb`` MB really resident (every page written)."""
    block = bytearray(size_mb * MB)
    block[:: 4096] = b"x" * len(block[:: 4096])
    return block


@pytest.mark.parametrize("sample", [False, True], ids=["high-water-mark", "sampling"])
def test_span_peak_is_its_own(sample):
    with PeakMemory(sample=sample, interval=0.001) as big:
        block = touch(300)
        if sample:
            import time

            time.sleep(0.05)  # let the sampler see it
        del block
    assert big.peak_mb >= big.start_mb + 250
    with PeakMemory(sample=sample, interval=0.001) as small:
        block = touch(20)
        del block
    # The second span does not report the first one's peak (the process's lifetime peak does).
    assert small.peak_mb < big.peak_mb - 200
    assert peak_memory_mb() >= big.peak_mb - 5
    assert small.peak_mb >= small.start_mb and small.peak_mb >= current_memory_mb() - 50


def test_nested_spans_keep_the_outer_peak():
    with PeakMemory() as outer:
        block = touch(300)
        del block
        with PeakMemory() as inner:  # resets the kernel's mark; the outer span must keep what it saw
            pass
    assert outer.peak_mb >= outer.start_mb + 250
    assert inner.peak_mb < outer.peak_mb - 200
