"""Probe: mask post-processing variants vs IoU on a dataset's local samples."""
import sys, numpy as np, scipy.ndimage as ndi
from m2ae_core import load_model, analyze, metrics
from m2ae_core.evaluate import masked_samples

ds = sys.argv[1]
model = load_model()
rows = {}
def add(name, m, truth):
    rows.setdefault(name, []).append((metrics.mask_iou(m, truth), m.mean()))
for sample, blur, truth in masked_samples(ds):
    if truth.all():
        continue
    r = analyze(model, blur)
    p, m = r.probability, r.mask
    add("base", m, truth)
    for lo, hi in [(0.5, 0.8), (0.4, 0.7), (0.5, 0.9), (0.3, 0.8)]:
        seeds = p > hi
        lab, n = ndi.label(p > lo)
        keep = np.unique(lab[seeds & (lab > 0)])
        add(f"hyst{lo}-{hi}", np.isin(lab, keep) & (lab > 0), truth)
    lab, n = ndi.label(m)
    if n:
        sizes = ndi.sum(m, lab, range(1, n + 1))
        add("largest", lab == (np.argmax(sizes) + 1), truth)
        for frac in (0.1, 0.3):
            keep = np.nonzero(sizes >= frac * sizes.max())[0] + 1
            add(f"cc>={frac}max", np.isin(lab, keep), truth)
    else:
        add("largest", m, truth); add("cc>=0.1max", m, truth); add("cc>=0.3max", m, truth)
    for k in (8, 16, 32):
        st = np.ones((k, k), bool)
        add(f"open{k}", ndi.binary_opening(m, st), truth)
        add(f"close{k}", ndi.binary_closing(m, st), truth)
    add("fill", ndi.binary_fill_holes(m), truth)
    # probability smoothing then threshold
    for s in (8, 24):
        add(f"blur{s}", ndi.gaussian_filter(p, s) > 0.5, truth)
    print(sample.name, f"base {rows['base'][-1][0]:.3f} largest {rows['largest'][-1][0]:.3f} truth {truth.mean():.3f} marked {m.mean():.3f}", flush=True)
for k, v in rows.items():
    a = np.array(v)
    print(f"{k:14s} IoU {a[:,0].mean():.3f} marked {a[:,1].mean():.3f}")
