"""Training and evaluation data: the synthetic local-motion-blur generator and its frozen benchmark.

``synthetic`` renders (blurred, sharp, mask, trajectory) samples from sharp photos;
``bench`` fixes the held-out photo split and the benchmark preset and provides the
``m2ae synth`` command.
"""
