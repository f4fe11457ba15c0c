"""Self-ensemble: the eight views turn images and displacement fields back exactly, and
``deblur(..., ensemble=n)`` is the mean of the views restored one by one."""
import numpy as np
import pytest
import torch

from conftest import randomize_
from m2ae_core import analyze, build_model, deblur
from m2ae_core.dihedral import View
from m2ae_core.self_ensemble import ENSEMBLE_SIZES, views


@pytest.fixture(scope="module")
def model():
    return randomize_(build_model("small", width=8), seed=5).eval()


def picture(h=36, w=52, seed=0):
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 1, w).expand(1, 3, h, w)
    return (0.6 * ramp + 0.4 * torch.rand(1, 3, h, w, generator=g)).contiguous()


def test_view_sets_start_with_the_identity_and_are_distinct():
    for n in ENSEMBLE_SIZES:
        chosen = views(n)
        assert len(chosen) == n and len(set(chosen)) == n
        assert chosen[0] == View()
    # 2 and 4 keep height and width, so tiling stays as in one pass
    assert all(v.size(30, 50) == (30, 50) for v in views(4))
    assert sorted(v.size(30, 50) for v in views(8)).count((50, 30)) == 4


@pytest.mark.parametrize("bad", [0, 3, 16, "8"])
def test_unsupported_ensemble_sizes_are_refused(model, bad):
    with pytest.raises(ValueError, match="ensemble must be one of 1, 2, 4, 8"):
        deblur(model, picture(), ensemble=bad)


@pytest.mark.parametrize("switch", [True, False])
def test_a_boolean_is_not_taken_for_a_number_of_copies(model, switch):
    with pytest.raises(ValueError, match="not a switch; ensemble=8"):
        deblur(model, picture(), ensemble=switch)


@pytest.mark.parametrize("view", views(8), ids=str)
def test_undo_inverts_apply(view):
    x = torch.arange(2 * 5 * 7, dtype=torch.float32).view(1, 2, 5, 7)
    turned = view.apply(x)
    assert turned.shape[-2:] == view.size(5, 7)
    assert torch.equal(view.undo(turned), x)


@pytest.mark.parametrize("view", views(8), ids=str)
def test_displacements_are_turned_back_with_the_image(view):
    """Content moved by (dx, dy) in the original appears moved by some (dx', dy') in the view;
    undo_vectors must map (dx', dy') back to (dx, dy)."""
    dx, dy = 2, -1
    a = torch.rand(1, 1, 9, 11, generator=torch.Generator().manual_seed(1))
    b = torch.roll(a, shifts=(dy, dx), dims=(-2, -1))  # b[y, x] = a[y - dy, x - dx]
    va, vb = view.apply(a), view.apply(b)
    found = [(sx, sy) for sx in range(-3, 4) for sy in range(-3, 4)
             if torch.equal(torch.roll(va, shifts=(sy, sx), dims=(-2, -1)), vb)]
    assert len(found) == 1
    field = torch.tensor(found[0], dtype=torch.float32).view(2, 1, 1).expand(2, *va.shape[-2:])
    back = view.undo_vectors(field[None])  # a leading (start, end)-like dim
    assert back.shape == (1, 2, 9, 11)
    assert torch.equal(back[0, 0], torch.full((9, 11), float(dx)))
    assert torch.equal(back[0, 1], torch.full((9, 11), float(dy)))


def by_hand(model, image, n, **kwargs):
    """Each view restored on its own, turned back, averaged."""
    parts = []
    for view in views(n):
        r = deblur(model, view.apply(image), **kwargs)
        parts.append((view.undo(r.image), view.undo(torch.from_numpy(r.probability)),
                      view.undo(torch.from_numpy(r.mask).float()),
                      view.undo_vectors(torch.from_numpy(r.trajectory))))
    return [torch.stack(p).mean(0) for p in zip(*parts)]


@pytest.mark.parametrize("n", [2, 8])
def test_ensemble_is_the_mean_of_the_views(model, n):
    image = picture()
    result = deblur(model, image, ensemble=n)
    image_mean, probability, mask_share, trajectory = by_hand(model, image, n)
    assert torch.allclose(result.image, image_mean, atol=1e-6)
    assert np.allclose(result.probability, probability.numpy(), atol=1e-6)
    assert np.array_equal(result.mask, (mask_share >= 0.5).numpy())
    assert np.allclose(result.trajectory, trajectory.numpy(), atol=1e-6)
    assert result.stats["ensemble"] == n
    single = deblur(model, image)
    assert single.stats["ensemble"] == 1
    assert not torch.allclose(result.image, single.image, atol=1e-4)  # the views do differ


def test_tiled_ensemble_matches_the_views_and_reports_every_step(model):
    image = picture(h=110, w=150, seed=2)
    calls = []
    result = deblur(model, image, ensemble=8, tile=64, progress=lambda d, t: calls.append((d, t)))
    image_mean, *_ = by_hand(model, image, 8, tile=64)
    assert torch.allclose(result.image, image_mean, atol=1e-6)
    total = calls[-1][1]
    assert [d for d, _ in calls] == list(range(1, total + 1))
    one_view = []
    deblur(model, image, tile=64, progress=lambda d, t: one_view.append(t))
    assert total == 8 * one_view[-1]


def test_a_given_mask_is_used_in_every_view(model):
    image = picture()
    given = np.zeros((36, 52), bool)
    given[5:20, 30:45] = True
    result = deblur(model, image, mask=given, ensemble=8)
    assert np.array_equal(result.mask, given)
    assert np.array_equal(analyze(model, image, mask=given, ensemble=8).mask, given)


def test_preserve_sharp_keeps_the_input_outside_the_consensus_mask(model):
    image = picture()
    given = np.zeros((36, 52), bool)
    given[10:26, 10:30] = True
    result = deblur(model, image, mask=given, ensemble=4, preserve_sharp=True)
    far = torch.ones(36, 52, dtype=torch.bool)
    far[2:34, 2:38] = False  # beyond the 4-pixel feather around the mask
    assert torch.equal(result.image[0][:, far], image[0][:, far])
    assert not torch.allclose(result.image[0][:, 12:24, 12:28], image[0][:, 12:24, 12:28])


def test_analyze_reports_the_same_consensus_as_deblur(model):
    image = picture(seed=3)
    restored = deblur(model, image, ensemble=8)
    maps = analyze(model, image, ensemble=8)
    assert maps.image is None and maps.stats["ensemble"] == 8
    assert np.array_equal(maps.mask, restored.mask)
    assert np.allclose(maps.probability, restored.probability, atol=1e-6)
    assert np.allclose(maps.trajectory, restored.trajectory, atol=1e-6)
