import json, sys, numpy as np
from pathlib import Path
from PIL import Image
from m2ae_core import load_model, deblur
from m2ae_core.metrics import weighted_psnr, sharp_psnr
root = Path(sys.argv[1]); m = load_model(device="cpu")
man = json.loads((root/"manifest.json").read_text())
samples = man["samples"] if "samples" in man else man
rows = []
for s in samples:
    if s.get("is_global") or s.get("global"): continue
    name = s["name"] if "name" in s else s["id"]
    blur = np.asarray(Image.open(root/"blur"/f"{name}.png").convert("RGB"))
    sharp = np.asarray(Image.open(root/"sharp"/f"{name}.png").convert("RGB"))
    mask = np.asarray(Image.open(root/"mask"/f"{name}.png")) > 127
    one = deblur(m, blur)
    two = deblur(m, one.image, mask=one.mask)   # second pass only where the first restored
    rows.append([weighted_psnr(x, sharp, mask) for x in (blur, one.image, two.image)] + [sharp_psnr(x, sharp, mask) for x in (one.image, two.image)])
r = np.array(rows); print(len(r), "local frames; wPSNR in/1/2:", r[:, :3].mean(0).round(3), "sharp 1/2:", np.minimum(r[:, 3:], 100).mean(0).round(2))
