"""Prototype: keep the input's local mean (low-pass of the output-input difference removed)."""
import json, sys, numpy as np, torch, torch.nn.functional as F
from pathlib import Path
from PIL import Image
from m2ae_core import load_model, deblur
from m2ae_core.metrics import weighted_psnr, sharp_psnr

def gauss_lowpass(x, sigma):  # x: [C,H,W] float
    r = int(3 * sigma)
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2); k /= k.sum()
    c = x.shape[0]
    y = F.pad(x[None], (r, r, 0, 0), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    y = F.pad(y, (0, 0, r, r), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return y[0]

def corrected(inp, out, sigma):
    a = torch.from_numpy(inp.astype(np.float32)).permute(2, 0, 1)
    b = torch.from_numpy(out.astype(np.float32)).permute(2, 0, 1)
    c = b - gauss_lowpass(b - a, sigma)
    return c.clamp(0, 255).round().permute(1, 2, 0).numpy().astype(np.uint8)

root = Path(sys.argv[1]); sigmas = [8, 16, 32, 64]
m = load_model(device="cpu")
man = json.loads((root / "manifest.json").read_text())
rows = []
for s in man["samples"]:
    if s["is_global"]: continue
    n = s["name"]
    blur = np.asarray(Image.open(root / "blur" / f"{n}.png").convert("RGB"))
    sharp = np.asarray(Image.open(root / "sharp" / f"{n}.png").convert("RGB"))
    mask = np.asarray(Image.open(root / "mask" / f"{n}.png")) > 127
    out = deblur(m, blur).image
    cands = [blur, out] + [corrected(blur, out, sg) for sg in sigmas]
    rows.append([weighted_psnr(x, sharp, mask) for x in cands] + [min(100, sharp_psnr(x, sharp, mask)) for x in cands])
r = np.array(rows); k = len(sigmas) + 2
print(len(r), "local frames; columns: input, output, sigma", sigmas)
print("wPSNR ", r[:, :k].mean(0).round(3))
print("sharp ", r[:, k:].mean(0).round(2))
