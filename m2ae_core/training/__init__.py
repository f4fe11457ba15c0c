"""Training of M2AENet (DESIGN §4): losses, datasets, config, trainer (single process or DDP).

Import the submodules directly (``m2ae_core.training.losses`` etc.); this package imports
nothing eagerly so that ``python -m m2ae_core.training.trainer`` stays cheap.
"""
