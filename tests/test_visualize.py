"""Colour-wheel motion pictures: white = still, hue = direction, saturation = speed."""
import numpy as np

from m2ae_core.visualize import mask_overlay, motion_to_rgb, trajectory_to_rgb


def test_still_pixels_are_white_and_fast_ones_saturated():
    flow = np.zeros((2, 1, 3), np.float32)
    flow[0, 0, 1] = 5.0  # half speed
    flow[0, 0, 2] = 10.0  # full speed
    rgb = motion_to_rgb(flow)
    assert rgb[0, 0].tolist() == [255, 255, 255]
    assert rgb[0, 2].min() == 0 and rgb[0, 2].max() == 255  # a pure hue
    assert 100 < rgb[0, 1].min() < 155  # half way to it


def test_opposite_directions_get_different_colours_and_scale_is_shared():
    flow = np.zeros((2, 1, 4), np.float32)
    flow[0, 0, 0], flow[0, 0, 1] = 3.0, -3.0
    flow[1, 0, 2], flow[1, 0, 3] = 3.0, -3.0
    rgb = motion_to_rgb(flow)
    colours = {tuple(c) for c in rgb[0]}
    assert len(colours) == 4
    dim = motion_to_rgb(flow, max_magnitude=30.0)
    assert dim.astype(int).sum() > rgb.astype(int).sum()  # fixed large scale: paler


def test_trajectory_uses_the_exposure_path():
    trajectory = np.zeros((2, 2, 2, 2), np.float32)
    trajectory[0, 0] = -4.0  # start 4 px left, end 4 px right of mid-exposure
    trajectory[1, 0] = 4.0
    assert np.array_equal(trajectory_to_rgb(trajectory), motion_to_rgb(trajectory[1] - trajectory[0]))


def test_mask_overlay_tints_only_the_mask():
    image = np.full((2, 2, 3), 100, np.uint8)
    mask = np.array([[True, False], [False, False]])
    out = mask_overlay(image, mask)
    assert out[0, 0].tolist() != [100, 100, 100]
    assert (out[1:, :] == 100).all() and (out[0, 1] == 100).all()
