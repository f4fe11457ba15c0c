"""Chunk sizes of the inference loops: cache-sized on a CPU, memory-bounded elsewhere."""
import torch

from m2ae_core import banded, deform, layers
from m2ae_core.chunking import ACCELERATOR_CHUNK_BYTES, chunk_items

CPU, GPU = torch.device("cpu"), torch.device("cuda")  # a device name needs no GPU


def test_a_cpu_keeps_its_measured_chunk_and_an_accelerator_fills_its_memory_bound():
    assert chunk_items(CPU, 7, 100) == 7
    assert chunk_items(GPU, 7, 100) == ACCELERATOR_CHUNK_BYTES // 100
    assert chunk_items(GPU, 10 ** 9, 100) == 10 ** 9  # never smaller than on a CPU


def test_deformable_taps_run_in_one_chunk_per_stage_map_on_an_accelerator():
    # the paper's stage-4 deform at 2152x1436: 180 x 269 pixels of 512 channels
    pixels, channels = 180 * 269, 512
    assert pixels // layers.cache_chunk(channels, CPU) > 40
    assert layers.cache_chunk(channels, GPU) >= pixels
    taps = 9
    assert chunk_items(GPU, deform.CORNER_BLOCK, deform.CORNER_BYTES_PER_TAP * taps) >= pixels


def test_a_large_map_is_banded_on_a_cpu_and_whole_on_an_accelerator():
    shape = (1, 64, 512, 512)  # its 128-channel temporary: 128 MiB
    assert banded.band_rows(torch.empty(shape, device="meta"), 128) == 512
    assert banded.band_rows(torch.empty(shape), 128) < 512
