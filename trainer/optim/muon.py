"""Muon: momentum SGD whose update for each 2-D matrix is orthogonalised by a Newton-Schulz
iteration, with the orthogonalisation split across ranks.

Every rank keeps the momentum of every matrix (an elementwise update, cheap), so the optimizer
state is identical on all ranks and any rank can checkpoint it. Only the expensive part, the
Newton-Schulz iteration, is divided: rank r orthogonalises the matrices assigned to it, writes
them into one flat buffer (zeros elsewhere), and a single all-reduce (sum) gives every rank
every update. Adding zeros is exact, so 1 and N ranks produce bit-identical updates.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

# Quintic iteration coefficients tuned to push singular values towards 1 quickly.
NS_COEFFS = (3.4445, -4.7750, 2.0315)
# Polar Express (Amsel et al., 2025): one (a, b, c) per iteration, each optimal for the
# worst case the previous ones leave; the input is normalised with a 1% safety margin.
# More iterations than tuples repeat the last one.
POLAR_EXPRESS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
POLAR_SAFETY = 1.01


def ns_schedule(kind: str, steps: int) -> tuple[tuple[float, float, float], ...]:
    """The (a, b, c) of each of `steps` iterations: "quintic" or "polar_express"."""
    if kind == "quintic":
        return (NS_COEFFS,) * steps
    if kind == "polar_express":
        return tuple(POLAR_EXPRESS[min(i, len(POLAR_EXPRESS) - 1)] for i in range(steps))
    raise ValueError(f"unknown Newton-Schulz coefficients {kind!r}")


def newton_schulz(g: torch.Tensor, steps: int = 5, eps: float = 1e-7,
                  kind: str = "quintic") -> torch.Tensor:
    """Approximately orthogonalise a matrix (U V^T of its SVD, singular values ~ 1).

    Runs in bfloat16 on CUDA (fast, and the iteration tolerates it) and float32 elsewhere.
    """
    x = g.bfloat16() if g.is_cuda else g.float()
    x = x / (x.norm() * (POLAR_SAFETY if kind == "polar_express" else 1.0) + eps)
    transposed = x.size(0) > x.size(1)
    if transposed:
        x = x.T
    for a, b, c in ns_schedule(kind, steps):
        m = x @ x.T
        poly = b * m + c * (m @ m)
        x = a * x + poly @ x
    return x.T if transposed else x


def row_normalize(g: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """MuonEq-R: every row scaled to unit L2 norm (rows of zeros stay zero)."""
    return g / g.float().norm(dim=-1, keepdim=True).clamp_min(eps).to(g.dtype)


def assign_owners(shapes: list[torch.Size], world: int) -> list[int]:
    """Deterministic load balance: largest Newton-Schulz cost first, to the least loaded
    rank. Every rank computes the same assignment from the same shapes."""
    cost = [int(s[0]) * int(s[1]) * min(int(s[0]), int(s[1])) for s in shapes]
    owners = [0] * len(shapes)
    load = [0] * world
    for i in sorted(range(len(shapes)), key=lambda i: (-cost[i], i)):
        r = min(range(world), key=lambda r: (load[r], r))
        owners[i] = r
        load[r] += cost[i]
    return owners


class Muon(torch.optim.Optimizer):
    """Muon for 2-D weight matrices.

    lr: step size of the orthogonalised update (scaled by sqrt(max(1, rows/cols)));
    momentum / nesterov: heavy-ball momentum on the raw gradient, Nesterov look-ahead;
    backend_steps: Newton-Schulz iterations; ns: their coefficients ("quintic" or
    "polar_express"); row_normalize: MuonEq-R, unit-norm rows of the update before the
    iteration; weight_decay: decoupled, p *= 1 - lr * wd;
    compile_ns: torch.compile the Newton-Schulz iteration (CUDA runs with compile on).
    """

    def __init__(self, params, lr: float = 0.04, momentum: float = 0.95, nesterov: bool = True,
                 backend_steps: int = 5, weight_decay: float = 0.0, compile_ns: bool = False,
                 ns: str = "quintic", row_normalize: bool = False):
        params = list(params)
        for p in params:
            if p.dim() != 2:
                raise ValueError(f"Muon takes 2-D matrices only, got shape {tuple(p.shape)}")
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov,
                                      backend_steps=backend_steps, weight_decay=weight_decay,
                                      ns=ns, row_normalize=row_normalize))
        ns_schedule(ns, 1)  # refuse unknown coefficients now, not at the first step
        # On GPUs the iteration is dozens of small kernels per matrix; compiling fuses them.
        self.orthogonalise = torch.compile(newton_schulz) if compile_ns else newton_schulz

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        distributed = dist.is_available() and dist.is_initialized()
        world = dist.get_world_size() if distributed else 1
        rank = dist.get_rank() if distributed else 0
        for group in self.param_groups:
            params = group["params"]
            if not params:
                continue
            owners = assign_owners([p.shape for p in params], world)
            total = sum(p.numel() for p in params)
            flat_dtype = torch.bfloat16 if params[0].is_cuda else torch.float32
            flat = torch.zeros(total, dtype=flat_dtype, device=params[0].device)
            momentum = group["momentum"]
            offset = 0
            for p, owner in zip(params, owners, strict=True):
                n = p.numel()
                if p.grad is not None:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(p.grad)
                    buf = state["momentum_buffer"]
                    buf.mul_(momentum).add_(p.grad)
                    if owner == rank:
                        g = p.grad.add(buf, alpha=momentum) if group["nesterov"] else buf
                        if group.get("row_normalize", False):
                            g = row_normalize(g)
                        u = self.orthogonalise(g, steps=group["backend_steps"],
                                               kind=group.get("ns", "quintic"))
                        u = u * max(1.0, p.size(0) / p.size(1)) ** 0.5
                        flat[offset:offset + n] = u.reshape(-1).to(flat_dtype)
                offset += n
            if world > 1:
                dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            lr, wd = group["lr"], group["weight_decay"]
            offset = 0
            for p in params:
                n = p.numel()
                if p.grad is not None:
                    if wd:
                        p.mul_(1.0 - lr * wd)
                    p.add_(flat[offset:offset + n].view_as(p).to(p.dtype), alpha=-lr)
                offset += n
        return loss
