# Vendored from ../shared/reference/reference_gan_bench.py (unchanged below this line): the plain PyTorch
# loop `gan-dist bench --reference` times beside the project step; CI clones only this repository.
"""Reference GAN training-step throughput, plain PyTorch, no framework.

Two standard models: DCGAN at 64x64 (PyTorch examples/dcgan shapes) and the
ResNet SNGAN used for CIFAR-10 benchmarks (32x32, hinge loss, spectral norm).
Synthetic data already on the device, so this is the compute ceiling a
distributed trainer is measured against.  Prints one table row per config.
"""
import json, os, sys, time, traceback
import torch, torch.nn as nn, torch.nn.functional as F
DEV = os.environ.get("DEV", "cuda")
SMOKE = os.environ.get("SMOKE") == "1"
from torch.utils.flop_counter import FlopCounterMode

SN = nn.utils.parametrizations.spectral_norm


class DCGAN_G(nn.Module):
    def __init__(s, nz=100, ngf=64, nc=3):
        super().__init__()
        s.net = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh())
        s.nz = nz

    def forward(s, z):
        return s.net(z.view(z.size(0), s.nz, 1, 1))


class DCGAN_D(nn.Module):
    def __init__(s, ndf=64, nc=3):
        super().__init__()
        s.net = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False))

    def forward(s, x):
        return s.net(x).view(-1)


class GBlock(nn.Module):
    def __init__(s, c):
        super().__init__()
        s.b1, s.c1, s.b2, s.c2 = nn.BatchNorm2d(c), nn.Conv2d(c, c, 3, 1, 1), nn.BatchNorm2d(c), nn.Conv2d(c, c, 3, 1, 1)

    def forward(s, x):
        h = F.interpolate(F.relu(s.b1(x)), scale_factor=2)
        h = s.c2(F.relu(s.b2(s.c1(h))))
        return h + F.interpolate(x, scale_factor=2)


class SNGAN_G(nn.Module):
    def __init__(s, nz=128, c=256):
        super().__init__()
        s.fc, s.c = nn.Linear(nz, 4 * 4 * c), c
        s.blocks = nn.Sequential(GBlock(c), GBlock(c), GBlock(c))
        s.out = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, 3, 3, 1, 1), nn.Tanh())
        s.nz = nz

    def forward(s, z):
        return s.out(s.blocks(s.fc(z).view(-1, s.c, 4, 4)))


class DBlock(nn.Module):
    def __init__(s, cin, cout, down, first=False):
        super().__init__()
        s.c1, s.c2 = SN(nn.Conv2d(cin, cout, 3, 1, 1)), SN(nn.Conv2d(cout, cout, 3, 1, 1))
        s.sc = SN(nn.Conv2d(cin, cout, 1)) if (cin != cout or down) else None
        s.down, s.first = down, first

    def forward(s, x):
        h = x if s.first else F.relu(x)
        h = s.c2(F.relu(s.c1(h)))
        if s.down:
            h = F.avg_pool2d(h, 2)
        sc = x
        if s.sc is not None:
            if s.first:
                sc = s.sc(F.avg_pool2d(x, 2))
            else:
                sc = s.sc(x)
                sc = F.avg_pool2d(sc, 2) if s.down else sc
        return h + sc


class SNGAN_D(nn.Module):
    def __init__(s, c=128):
        super().__init__()
        s.blocks = nn.Sequential(DBlock(3, c, True, True), DBlock(c, c, True), DBlock(c, c, False), DBlock(c, c, False))
        s.fc = SN(nn.Linear(c, 1))

    def forward(s, x):
        h = F.relu(s.blocks(x)).sum(dim=(2, 3))
        return s.fc(h).view(-1)


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


MODELS = {"dcgan64": (DCGAN_G, DCGAN_D, 64, 100, "bce"), "sngan32": (SNGAN_G, SNGAN_D, 32, 128, "hinge")}


def make_step(G, D, oG, oD, loss, nz, bs, dtype, cl):
    def step(real):
        torch.compiler.cudagraph_mark_step_begin()
        z = torch.randn(bs, nz, device=DEV)
        with torch.autocast(DEV, dtype=dtype, enabled=dtype is not None):
            fake = G(z)
            if cl:
                fake = fake.contiguous(memory_format=torch.channels_last)
            dr, df = D(real), D(fake.detach())
            if loss == "bce":
                lD = F.softplus(-dr).mean() + F.softplus(df).mean()
            else:
                lD = F.relu(1 - dr).mean() + F.relu(1 + df).mean()
        oD.zero_grad(set_to_none=True); lD.backward(); oD.step()
        with torch.autocast(DEV, dtype=dtype, enabled=dtype is not None):
            dg = D(fake)
            lG = F.softplus(-dg).mean() if loss == "bce" else -dg.mean()
        oG.zero_grad(set_to_none=True); lG.backward(); oG.step()
        return lD.detach(), lG.detach()
    return step


def run(model, bs, prec, compile_, cl, steps=40, warm=8, mode=None):
    if SMOKE:
        steps, warm, bs = 2, 1, 4
    Gc, Dc, res, nz, loss = MODELS[model]
    torch.manual_seed(0)
    G, D = Gc().to(DEV), Dc().to(DEV)
    if cl:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    oG = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999), fused=(DEV == "cuda"))
    oD = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999), fused=(DEV == "cuda"))
    dtype = {"fp32": None, "bf16": torch.bfloat16}[prec]
    Gr, Dr = (torch.compile(G, mode=mode), torch.compile(D, mode=mode)) if compile_ else (G, D)
    step = make_step(Gr, Dr, oG, oD, loss, nz, bs, dtype, cl)
    reals = [torch.randn(bs, 3, res, res, device=DEV).clamp_(-1, 1) for _ in range(4)]
    if cl:
        reals = [r.contiguous(memory_format=torch.channels_last) for r in reals]
    t0 = time.time()
    for i in range(warm):
        lD, lG = step(reals[i % 4])
    sync()
    warm_s = time.time() - t0
    flops = None
    if not compile_:
        with FlopCounterMode(display=False) as fc:
            step(reals[0])
        flops = fc.get_total_flops()
    sync()
    times = []
    for rep in range(3):
        sync(); t1 = time.perf_counter()
        for i in range(steps):
            lD, lG = step(reals[i % 4])
        sync()
        times.append((time.perf_counter() - t1) / steps)
    t = sorted(times)[1]
    ok = bool(torch.isfinite(lD) and torch.isfinite(lG))
    return dict(mode=mode, model=model, bs=bs, prec=prec, compile=compile_, channels_last=cl, step_ms=t * 1000,
                img_per_s=bs / t, warm_s=warm_s, flops_per_step=flops, finite=ok,
                tflops=(flops / t / 1e12) if flops else None, mem_gb=torch.cuda.max_memory_allocated() / 2**30 if DEV == "cuda" else None)


def main():
    out = os.environ.get("OUT", ".")
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    print("torch", torch.__version__, torch.cuda.get_device_name() if DEV == "cuda" else "cpu", flush=True)
    cfgs = [
        ("dcgan64", 256, "bf16", False, False),
        ("dcgan64", 256, "bf16", True, False),
        ("dcgan64", 256, "bf16", True, False, 40, 8, "reduce-overhead"),
        ("dcgan64", 128, "fp32", True, False, 40, 8, "reduce-overhead"),
        ("sngan32", 256, "fp32", False, False),
        ("sngan32", 256, "bf16", True, False),
        ("sngan32", 64, "fp32", True, False, 40, 8, "reduce-overhead"),
        ("sngan32", 256, "bf16", True, False, 40, 8, "reduce-overhead"),
    ]
    if SMOKE:
        cfgs = [c for c in cfgs if not c[3]]
    rows = []
    for c in cfgs:
        t0 = time.time()
        try:
            r = run(*c)
        except Exception as ex:
            traceback.print_exc()
            r = dict(model=c[0], bs=c[1], prec=c[2], compile=c[3], channels_last=c[4], error=repr(ex)[:200])
        r["wall_s"] = time.time() - t0
        rows.append(r)
        print(json.dumps(r), flush=True)
        if DEV == "cuda":
            torch.cuda.reset_peak_memory_stats()
        with open(os.path.join(out, "reference_gan_bench.json"), "w") as f:
            json.dump(rows, f, indent=1)
    print("\nmodel    bs   prec compile cl  step_ms   img/s     TFLOP/s  warm_s")
    for r in rows:
        if "error" in r:
            print(r["model"], r["bs"], r["prec"], r["compile"], "ERROR", r["error"][:80]); continue
        print(f'{r["model"]:8} {r["bs"]:4} {r["prec"]:4} {str(r["compile"]):7} {str(r["channels_last"])[0]} {r["step_ms"]:8.2f} {r["img_per_s"]:9.0f} {r["tflops"] or 0:8.1f} {r["warm_s"]:7.1f}')


if __name__ == "__main__":
    main()
