import sys, torch
from m2ae_core.benchmark.cell import make_inputs
from m2ae_core.benchmark.models import build_spec_model, parse_model_spec
torch.set_num_threads(2)
def code():
    tot = {}
    kind = None
    for line in open("/proc/self/smaps"):
        p = line.split()
        if p and not p[0].endswith(":"):
            path = p[5] if len(p) > 5 else ""
            kind = path.rsplit("/",1)[-1] if path.startswith("/") else None
        elif p and p[0] == "Rss:" and kind:
            tot[kind] = tot.get(kind, 0) + int(p[1])
    return tot
def rss():
    for l in open("/proc/self/status"):
        if l.startswith("RssFile") or l.startswith("RssAnon"): print("   ", l.strip())
size = int(sys.argv[1]) if len(sys.argv) > 1 else 512
with torch.inference_mode():
    for name in ["nafnet-w32", "paper-pruned", "nafnet-w32", "paper-pruned"]:
        spec = parse_model_spec(name)
        m = build_spec_model(spec)
        img, mask = make_inputs(size, size, 10 if spec.uses_mask else None, "cpu")
        before = code()
        m(img, mask=mask, pruned=spec.mode != "dense")
        after = code()
        diff = {k: (after.get(k,0)-before.get(k,0))/1024 for k in after if after.get(k,0)!=before.get(k,0)}
        print(name, {k: round(v,2) for k, v in diff.items()})
