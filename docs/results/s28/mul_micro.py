"""The same full-resolution band ops alone, outside a forward (session 28).

    OMP_NUM_THREADS=2 python docs/results/s28/mul_micro.py
"""
import torch, time, torch.nn.functional as F
torch.set_num_threads(2)
def t(f, n=20):
    f(); ts=[]
    for _ in range(n):
        a=time.perf_counter(); f(); ts.append(time.perf_counter()-a)
    ts.sort(); return ts[len(ts)//2]*1e3
x = torch.randn(1,64,15,2160).contiguous(memory_format=torch.channels_last)
a,b = x.chunk(2, dim=1)
print("chunked CL mul", t(lambda: a*b))
ac, bc = a.contiguous(), b.contiguous()
print("contig NCHW mul", t(lambda: ac*bc))
acl, bcl = a.contiguous(memory_format=torch.channels_last), b.contiguous(memory_format=torch.channels_last)
print("contig CL mul", t(lambda: acl*bcl))
y = torch.randn(1,64,17,2160).contiguous(memory_format=torch.channels_last); w = torch.randn(64,1,3,3); bias=torch.randn(64)
print("dw conv CL", t(lambda: F.conv2d(y, w, bias, padding=(0,1), groups=64)))
