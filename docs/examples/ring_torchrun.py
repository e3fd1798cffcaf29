"""Ring attention under torchrun: each process holds a shard of the sequence; the result is exact.

Run on one machine with CPU processes (gloo):

    torchrun --standalone --nproc_per_node 2 docs/examples/ring_torchrun.py

On GPUs, use the nccl backend and move the tensors to ``cuda:LOCAL_RANK``; nothing else changes.
"""
import os

import torch
import torch.distributed as dist

import qkv
from qkv.distributed import gather, ring_attention, shard

dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
rank, world = dist.get_rank(), dist.get_world_size()
device = torch.device(f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if torch.cuda.is_available() else "cpu")

torch.manual_seed(0)  # every rank draws the same whole sequence, then keeps its own shard
q, k, v = (torch.randn(1, 4, 4096, 64, device=device) for _ in range(3))  # (B, H, N, D)
mask = qkv.masks.causal()

local = [shard(x, dim=2, layout="zigzag") for x in (q, k, v)]  # (B, H, N / world, D) each
out = ring_attention(*local, mask=mask, layout="zigzag")  # this rank's queries against every key
whole = gather(out, dim=2, layout="zigzag")  # (B, H, N, D), the same on every rank

if rank == 0:
    expected = qkv.attention(q, k, v, mask=mask)  # one process, the whole sequence
    print(f"{world} ranks: max |ring - single process| = {(whole - expected).abs().max().item():.1e}")
dist.destroy_process_group()
