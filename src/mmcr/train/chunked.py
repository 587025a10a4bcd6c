"""Many views in fixed memory: view-chunked two-pass backpropagation.

Objectives couple the views of a batch only through their embeddings (MMCR through the (B, d)
centroids), so the embedding gradient dL/dz can be computed once for all views and pushed through
the encoder one chunk of views at a time:

1. embed every chunk without autograd (no activations kept), assemble z (B, k, d);
2. the objective and dL/dz on the full z (the cross-rank gather happens here, once);
3. embed each chunk again with autograd, back-propagate its slice of dL/dz, free its activations.

Peak activation memory is that of one chunk, at the price of a second forward (about 1.33x a step).

Exactness. Views are chunked in view-major order (view 0 of every image, then view 1, ...), so a chunk
mixes images. Without batch-dependent layers the chunked gradient is the unchunked one. With BatchNorm
in training mode, each chunk is normalised by its own statistics, exactly like per-GPU BatchNorm across
ranks: the step is the exact gradient of the model whose BatchNorm normalises per chunk, because both
passes see the same chunk composition and the same weights. Running statistics are updated once per
chunk (by the first pass; the second pass's updates are discarded). Random layers (dropout, stochastic
depth) replay the masks of the first pass: each chunk's RNG state is captured before its first forward
and restored before its second. Under DDP, gradients are accumulated locally and all-reduced once, on
the last chunk's backward.
"""

from __future__ import annotations

import os
from contextlib import nullcontext

import torch
from torch import nn

from mmcr.train.context import autocast_for, finite_and_clean, to_input


def _rng_state(device: torch.device):
    return torch.get_rng_state(), (torch.cuda.get_rng_state(device) if device.type == "cuda" else None)


def _set_rng_state(state, device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def view_major_chunks(n_images: int, n_views: int, chunk: int) -> list[torch.Tensor]:
    """Row indices into a (B, k) group flattened image-major (row = b * k + v), ordered view-major
    (all images' view 0 first) and cut into chunks of at most ``chunk`` views."""
    order = (torch.arange(n_images)[None, :] * n_views + torch.arange(n_views)[:, None]).flatten()
    return list(order.split(chunk))


def activation_bytes_per_view(model: nn.Module, x: torch.Tensor, amp_dtype: torch.dtype | None) -> float:
    """Bytes that autograd keeps for backward per input view, measured on a probe batch ``x`` by
    summing the tensors saved for backward (device-independent; model state is left untouched)."""
    total = 0
    seen: set[int] = set()

    def pack(t: torch.Tensor):
        nonlocal total
        key = t.untyped_storage().data_ptr() if t.device.type != "meta" else id(t)
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
        return t

    buffers = [b.detach().clone() for b in model.buffers()]
    autocast = torch.autocast(x.device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
            out = model(x)
    del out
    with torch.no_grad():
        for b, old in zip(model.buffers(), buffers):
            b.copy_(old)
    return total / x.shape[0]


def free_memory_bytes(device: torch.device) -> int:
    """Free memory of the accelerator, or the memory the OS can still give this process on a CPU
    (``MemAvailable`` of /proc/meminfo where there is one, else free pages)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def resolve_view_chunk(setting, model: nn.Module, probe: torch.Tensor, amp_dtype, budget_gb: float | None,
                       total_views: int) -> int | None:
    """The number of views per chunk: an int as given, ``auto`` from the activation budget (``budget_gb``,
    or half the free memory of the device), or None (no chunking) when everything fits in one chunk."""
    if setting is None:
        return None
    if setting == "auto":
        budget = budget_gb * 2**30 if budget_gb is not None else free_memory_bytes(probe.device) / 2
        per_view = activation_bytes_per_view(model, probe, amp_dtype)
        setting = max(1, int(budget // max(per_view, 1.0)))
    return None if setting >= total_views else int(setting)


def chunked_forward_backward(ctx, state, groups: list[torch.Tensor], chunk: int):
    """Two-pass forward/backward of the view groups [(B, k_g, 3, h_g, w_g), ...]; returns
    (loss, finite flag) as :func:`mmcr.train.step.forward_backward` does, with the gradients of the
    model's parameters accumulated (scaled by the loss scaler)."""
    device = ctx.dist_info.device
    autocast = autocast_for(ctx)
    plans = []  # per group: (flattened views, chunks of row indices)
    for g in groups:
        b, k = g.shape[:2]
        plans.append((to_input(ctx, g.flatten(0, 1)), view_major_chunks(b, k, chunk), b, k))
    # pass 1: embeddings without activations, the RNG state of every chunk recorded
    rng, zs, zms = [], [], []
    with torch.no_grad():
        for x, chunks, b, k in plans:
            z = None
            z_m = None
            for rows in chunks:
                rng.append(_rng_state(device))
                with autocast:
                    out = ctx.forward(x[rows])
                    out_m = state.momentum(x[rows]) if state.momentum is not None else None
                if z is None:
                    z = out.new_empty(b * k, out.shape[1])
                    z_m = out_m.new_empty(b * k, out_m.shape[1]) if out_m is not None else None
                z[rows] = out
                if out_m is not None:
                    z_m[rows] = out_m
            zs.append(z.view(b, k, -1))
            zms.append(z_m.view(b, k, -1) if z_m is not None else None)
    after_pass1 = _rng_state(device)
    running = [t.detach().clone() for t in state.model.buffers()]
    # the objective and dL/dz on all the views at once
    z = torch.cat(zs, dim=1)
    z_m = torch.cat(zms, dim=1) if zms[0] is not None else None
    z, z_m, finite = finite_and_clean(ctx, z, z_m)
    z = z.detach().requires_grad_(True)
    loss = ctx.objective(z, z_m) if z_m is not None else ctx.objective(z)
    state.scaler.scale(loss).backward()
    grads = z.grad.split([g.shape[1] for g in groups], dim=1)
    # pass 2: each chunk again, with autograd, back-propagating its slice of dL/dz
    n_chunks = sum(len(p[1]) for p in plans)
    i = 0
    for (x, chunks, b, k), grad in zip(plans, grads):
        flat_grad = grad.reshape(b * k, -1)
        for rows in chunks:
            i += 1
            _set_rng_state(rng[i - 1], device)
            sync = nullcontext() if ctx.ddp is None or i == n_chunks else ctx.ddp.no_sync()
            with sync:
                with autocast:
                    out = ctx.forward(x[rows])
                out.backward(flat_grad[rows].to(out.dtype))
    with torch.no_grad():  # running statistics: the first pass's, not the second's
        for t, old in zip(state.model.buffers(), running):
            t.copy_(old)
    _set_rng_state(after_pass1, device)
    return loss, finite
