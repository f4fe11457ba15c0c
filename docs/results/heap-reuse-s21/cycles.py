import resource, sys, torch
from m2ae_core.memory import reuse_heap, return_freed_memory_promptly
return_freed_memory_promptly()
def flt(): return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def rss(): return int(next(l for l in open("/proc/self/status") if l.startswith("RssAnon")).split()[1]) // 1024
for mode in ("off", "on"):
    with reuse_heap(enabled=mode == "on"):
        out = []
        for cycle in range(5):
            f = flt()
            if sys.argv[1] == "one":
                t = torch.ones(64 << 18); del t
            else:
                a = torch.ones(17 << 18); b = torch.ones(17 << 18); small = torch.ones(1000); c = torch.ones(34 << 18); del a, b, c
            out.append((flt() - f, rss()))
    print(mode, out, "after", rss())
