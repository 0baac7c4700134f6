"""Host batches (dicts of tensors) -> device batches ahead of the step: pinned memory, asynchronous copies on a side
stream.

On a GPU the GAN step is launch-bound, so a pageable or synchronous copy in the step's stream stalls it; here the
copies of the next `depth` batches run on their own stream while the step runs on the consumer's stream.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import TypeVar

import torch

from gan_dist.data.reader import Batch

T = TypeVar("T")


def to_device_ahead(batches: Iterable[tuple[Batch, T]], device: torch.device | str,
                    depth: int = 2) -> Iterator[tuple[Batch, T]]:
    """(host batch, tag) pairs -> (device batch, same tag), `depth` copies in flight. Off CUDA: the items
    themselves, unchanged (the same iterator, no copies)."""
    device = torch.device(device)
    if device.type != "cuda":
        return iter(batches)
    return _cuda_ahead(iter(batches), device, max(1, depth))


def _cuda_ahead(source: Iterator[tuple[Batch, T]], device: torch.device,
                depth: int) -> Iterator[tuple[Batch, T]]:
    side = torch.cuda.Stream(device)
    in_flight: deque = deque()  # (device batch, tag, copy-done event, host batch kept alive until the copy ends)
    try:
        for host, tag in source:
            # A pageable source would make the "asynchronous" copy synchronous.
            host = {name: t if t.is_pinned() else t.pin_memory() for name, t in host.items()}
            with torch.cuda.stream(side):
                on_device = {name: t.to(device, non_blocking=True) for name, t in host.items()}
                done = torch.cuda.Event()
                done.record(side)
            in_flight.append((on_device, tag, done, host))
            if len(in_flight) > depth:  # the consumer works on one batch while `depth` more are copied
                yield _hand_over(in_flight.popleft(), device)
        while in_flight:
            yield _hand_over(in_flight.popleft(), device)
    finally:
        close = getattr(source, "close", None)
        if close is not None:  # e.g. stops the DataLoader workers behind it now rather than at garbage collection
            close()


def _hand_over(item: tuple, device: torch.device) -> tuple[Batch, object]:
    on_device, tag, done, _host = item
    consumer = torch.cuda.current_stream(device)
    consumer.wait_event(done)  # the step's kernels start after the copy, without blocking the host
    # The tensor was allocated on the side stream: tell the caching allocator the consumer uses it, so its
    # memory is not handed out again before the consumer's work on it has finished.
    for tensor in on_device.values():
        tensor.record_stream(consumer)
    return on_device, tag
