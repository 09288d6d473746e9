"""Strategies, optimizers, schedules, callbacks and the trainer."""
