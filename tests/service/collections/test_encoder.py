"""A served model's encoder runs one forward pass at a time, whichever threads call it."""

import threading
import time

import numpy as np
import torch
from torch import nn

from service.collections.encoder import load_encoder


class CountingNetwork(nn.Module):
    """Wraps a network; records the most forward passes that were running at once."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.running = 0
        self.most = 0
        self.count = threading.Lock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self.count:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.02)  # long enough for another thread to come in, were it let in
        try:
            return self.inner(x)
        finally:
            with self.count:
                self.running -= 1


def test_two_concurrent_reembeds_never_overlap_on_one_encoder(bundled_model):
    encoder = load_encoder("omniglot", bundled_model, "cpu", batch_size=4, max_pixels=10**6)
    counting = CountingNetwork(encoder.network)
    encoder.network = counting
    pixels = np.full((16, *encoder.input_spec.pixel_shape), 255, dtype=np.uint8)
    results: list[np.ndarray] = []

    def reembed() -> None:  # as the change feed's thread and a request's thread do
        results.append(encoder.embed_batch(pixels))

    threads = [threading.Thread(target=reembed) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counting.most == 1
    assert len(results) == 2 and np.array_equal(results[0], results[1])
