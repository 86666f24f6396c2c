"""Helpers the test modules share (launching the trainer, spawning gloo ranks, bad-input fixtures)."""
