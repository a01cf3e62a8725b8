"""PeakMemory: the peak of one span of code, not the process's lifetime peak."""

from __future__ import annotations

import sys

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


def _rss_file_kb() -> int:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("RssFile:"))


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and calls madvise")


@linux_only
def test_a_mapped_files_pages_leave_the_resident_set_and_read_back_the_same(tmp_path):
    import torch

    from tuneforge.core.memory import file_mappings, release_file_pages

    data = torch.arange(4 << 20, dtype=torch.float32)  # 16 MB
    data.numpy().tofile(tmp_path / "weights.bin")
    # A private, copy-on-write mapping, as transformers maps a safetensors file.
    mapped = torch.from_file(str(tmp_path / "weights.bin"), shared=False, size=data.numel(), dtype=torch.float32)
    assert any(low <= mapped.data_ptr() < high for low, high in file_mappings())
    assert torch.equal(mapped, data)  # every page read in
    before = _rss_file_kb()
    released = release_file_pages(mapped.data_ptr(), mapped.numel() * mapped.element_size())
    assert released >= 16_000_000 - 2 * 4096
    assert _rss_file_kb() < before - 15_000
    assert torch.equal(mapped, data)  # read again from the file


@linux_only
def test_anonymous_memory_and_part_pages_are_never_released():
    import torch

    from tuneforge.core.memory import release_file_pages

    tensor = torch.arange(4 << 20, dtype=torch.float32)
    copy = tensor.clone()
    assert release_file_pages(tensor.data_ptr(), tensor.numel() * 4) == 0  # dropping anonymous pages would zero them
    assert torch.equal(tensor, copy)
    assert release_file_pages(4096 + 8, 4000) == 0  # no whole page inside the range


@linux_only
def test_the_lifetime_peak_is_in_the_same_megabytes_as_the_current_size():
    # ru_maxrss is in KiB on Linux: read as thousands of bytes it came out 2.4 % low, below a span's own peak.
    block = touch(200)
    now = current_memory_mb()
    del block
    assert peak_memory_mb() >= now - 1
