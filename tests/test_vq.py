"""Vector quantisation and VQ-VAE: mechanics, dead-code restart, and exact statistics under DDP."""

import math
import os
import socket
from functools import partial

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vae_zoo.blocks.likelihoods import Bernoulli
from vae_zoo.blocks.quantizers import VectorQuantizer
from vae_zoo.models import VQVAE
from vae_zoo.nets import ConvGridDecoder, ConvGridEncoder

CENTRES = torch.randn(8, 4, generator=torch.Generator().manual_seed(0)) * 5


def clustered(n, seed=0, spread=0.5):
    """(n, 4, 1, 1) encoder outputs around 8 fixed, well-separated centres."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, len(CENTRES), (n,), generator=g)
    return (CENTRES[labels] + spread * torch.randn(n, 4, generator=g))[:, :, None, None]


def test_nearest_code_and_straight_through_gradient():
    quantizer = VectorQuantizer(num_codes=3, code_dim=2, ema=False, restart_dead_codes=False)
    quantizer.codebook.data = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-2.0, 0.0]])
    z_e = torch.tensor([[0.9, 1.2], [-1.5, 0.1]]).view(2, 2, 1, 1).requires_grad_()
    out = quantizer(z_e)
    assert out.indices.flatten().tolist() == [1, 2]
    torch.testing.assert_close(out.z_q.detach().flatten(1), torch.tensor([[1.0, 1.0], [-2.0, 0.0]]))
    out.z_q.sum().backward()  # straight-through: d z_q / d z_e = identity
    torch.testing.assert_close(z_e.grad, torch.ones_like(z_e))
    # per-example sums of squared distances
    torch.testing.assert_close(out.commitment_loss, torch.tensor([0.01 + 0.04, 0.25 + 0.01]))
    torch.testing.assert_close(out.codebook_loss, out.commitment_loss)
    assert out.perplexity.item() == pytest.approx(2.0)  # two codes used equally


def test_ema_update_matches_the_formula():
    quantizer = VectorQuantizer(num_codes=2, code_dim=1, decay=0.5, eps=0.0, restart_dead_codes=False)
    quantizer.codebook.copy_(torch.tensor([[0.0], [10.0]]))
    quantizer.ema_sum.copy_(quantizer.codebook)
    quantizer.ema_count.fill_(1.0)
    quantizer.train()
    quantizer(torch.tensor([1.0, 2.0, 9.0]).view(3, 1, 1, 1))
    # counts (2, 1), sums (3, 9): N = 0.5*1 + 0.5*(2, 1) = (1.5, 1); m = 0.5*(0, 10) + 0.5*(3, 9)
    torch.testing.assert_close(quantizer.ema_count, torch.tensor([1.5, 1.0]))
    torch.testing.assert_close(quantizer.codebook.flatten(), torch.tensor([1.5 / 1.5, 9.5 / 1.0]))


def codes_in_use_after_training(restart: bool) -> int:
    """A codebook that starts with all but 2 of 32 codes far from the data (never chosen)."""
    torch.manual_seed(0)
    quantizer = VectorQuantizer(num_codes=32, code_dim=4, decay=0.9, restart_dead_codes=restart)
    far = torch.full((32, 4), 100.0)
    far[:2] = torch.randn(2, 4)
    quantizer.codebook.copy_(far)
    quantizer.ema_sum.copy_(far)
    quantizer.train()
    for step in range(60):
        quantizer(clustered(256, seed=step))
    quantizer.eval()
    return len(quantizer(clustered(2048, seed=999)).indices.unique())


def test_dead_code_restart_brings_unused_codes_back():
    without, with_restart = codes_in_use_after_training(False), codes_in_use_after_training(True)
    assert without <= 2
    assert with_restart >= 16, with_restart  # measured: 2 without, 32 with


def test_kmeans_init_finds_the_clusters():
    torch.manual_seed(0)
    uninitialised = VectorQuantizer(num_codes=16, code_dim=4, kmeans_init=False).codebook.clone()
    quantizer = VectorQuantizer(num_codes=16, code_dim=4, kmeans_init=True, restart_dead_codes=False, decay=0.999)
    quantizer.train()
    quantizer(clustered(1024))
    assert bool(quantizer.initialized)
    # every true cluster centre has a code close by (the default init is ~|centre| away)
    assert torch.cdist(CENTRES, quantizer.codebook).min(dim=1).values.max() < 1.0
    assert torch.cdist(CENTRES, uninitialised).min(dim=1).values.min() > 3.0


def test_vq_vae_elbo_uses_log_k_per_position_and_training_helps():
    torch.manual_seed(0)
    model = VQVAE(
        quantizer=VectorQuantizer(num_codes=16, code_dim=8),
        encoder=partial(ConvGridEncoder, hidden_channels=(16, 16), num_residual_blocks=1),
        decoder=partial(ConvGridDecoder, hidden_channels=(16, 16), num_residual_blocks=1),
        likelihood=Bernoulli(),
        image_channels=1,
        image_size=28,
        optimizer=partial(torch.optim.Adam, lr=2e-3),
    )
    x = torch.zeros(32, 1, 28, 28)
    for i in range(32):
        x[i, 0, (i % 14) * 2 : (i % 14) * 2 + 3, 3:25] = 1
    terms = model(x)
    assert model.grid_size == 7 and terms.kl_per_dim.shape == (49,)
    torch.testing.assert_close(terms.kl, torch.tensor(49 * math.log(16)))
    torch.testing.assert_close(terms.elbo, -(terms.recon + 49 * math.log(16)))
    optimizer = model.configure_optimizers()
    before = terms.recon.item()
    for _ in range(80):
        optimizer.zero_grad()
        model(x).loss.backward()
        optimizer.step()
    assert model(x).recon.item() < 0.5 * before
    assert model.sample(4).shape == (4, 1, 28, 28)
    assert set(model(x).extras) == {"codebook_loss", "commitment_loss", "perplexity", "dead_codes"}


# ---------------------------------------------------------------------------- DDP
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_quantizer(restart: bool) -> VectorQuantizer:
    torch.manual_seed(0)
    return VectorQuantizer(
        num_codes=16, code_dim=4, decay=0.8, restart_dead_codes=restart, dead_code_threshold=2.0
    ).train()


def ddp_worker(rank: int, world_size: int, port: int, out_dir: str, restart: bool) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    quantizer = make_quantizer(restart)
    torch.manual_seed(100 + rank)  # ranks draw different random numbers, as they would
    perplexities = []
    for step in range(5):
        batch = clustered(64, seed=step)
        shard = batch[rank * 32 : (rank + 1) * 32]  # each rank sees its half of the batch
        perplexities.append(quantizer(shard).perplexity)
    torch.save(
        {
            "codebook": quantizer.codebook.clone(),
            "ema_count": quantizer.ema_count.clone(),
            "perplexity": torch.stack(perplexities),
        },
        os.path.join(out_dir, f"rank{rank}.pt"),
    )
    dist.barrier()  # both saved; torch 2.6's gloo hangs in destroy_process_group when a peer already left
    dist.destroy_process_group()


@pytest.mark.parametrize("restart", [False, True])
def test_codebook_statistics_are_exact_under_ddp(tmp_path, restart):
    """Two gloo processes on halves of each batch end with the codebook one process gets on the
    whole batches (EMA counts and sums all-reduced), and both ranks hold the same codebook."""
    mp.spawn(ddp_worker, args=(2, free_port(), str(tmp_path), restart), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    torch.testing.assert_close(ranks[0]["codebook"], ranks[1]["codebook"], rtol=0, atol=0)
    if restart:
        return  # restarts draw replacements from rank 0's shard: not the single-process draw
    single = make_quantizer(restart=False)
    perplexities = [single(clustered(64, seed=step)).perplexity for step in range(5)]
    torch.testing.assert_close(ranks[0]["codebook"], single.codebook)
    torch.testing.assert_close(ranks[0]["ema_count"], single.ema_count)
    torch.testing.assert_close(ranks[0]["perplexity"], torch.stack(perplexities))
