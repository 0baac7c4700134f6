"""Measuring what a trained generator draws: a per-dataset classifier and the class agreement it scores."""
