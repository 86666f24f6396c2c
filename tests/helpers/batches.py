"""Comparing dataloader output: the next n batches of an iterator, and batch-by-batch equality."""

import torch


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for (inputs_a, labels_a), (inputs_b, labels_b) in zip(a, b):
        assert inputs_a.keys() == inputs_b.keys()
        for key in inputs_a:
            assert torch.equal(inputs_a[key], inputs_b[key])
        assert torch.equal(labels_a, labels_b)
