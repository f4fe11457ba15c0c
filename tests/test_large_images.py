"""Tens of megapixels go through automatic tiling in bounded memory when memory is short
(slow: run with -m slow)."""
import resource

import numpy as np
import pytest

from m2ae_core import build_model, deblur


@pytest.mark.slow
def test_twenty_megapixels_auto_tiled(monkeypatch):
    from m2ae_core import inference

    # as on a machine with 8 GB available: the whole image (about 10 GB) must not fit
    monkeypatch.setattr(inference, "available_memory", lambda device: 8 * 10**9)
    model = build_model("small").eval()
    h, w = 3648, 5472  # 20 MP, a common camera size
    image = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    calls = []
    result = deblur(model, image, progress=lambda d, t: calls.append(t))
    assert result.image.shape == image.shape and result.image.dtype == np.uint8
    assert result.mask.shape == (h, w)
    # two passes over the tiles: the first records the image-wide pooled context
    assert result.stats["tiles"] > 1 and calls[-1] == 2 * result.stats["tiles"]
    assert result.stats["tile_context"] == "image"
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"20 MP: {result.stats['tiles']} tiles, {result.stats['seconds']:.0f} s, peak RSS {peak_gb:.1f} GB")
    assert peak_gb < 8
