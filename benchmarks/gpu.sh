#!/usr/bin/env bash
# The GPU figures of issue 18, in one run on a machine with a CUDA GPU (about 10 minutes):
#     bash benchmarks/gpu.sh /path/to/mnist_root
# MNIST (conv and MLP nets): images/s and seconds per epoch of the plain loop on the GPU against
# vae_zoo on the GPU with each flag on its own (bf16 mixed precision, the data held in GPU memory,
# torch.compile, channels_last off), then IS-NLL throughput (k = 1000) on the GPU, then CelebA-shaped
# 64x64x3 images (synthetic, data=folder): the conv VAE and beta-VAE, fp32 against bf16-mixed, each
# with and without data.on_device (benchmarks/celeba_shaped.py).
set -euo pipefail
root=${1:?the folder that holds MNIST/raw}
gpu="trainer.accelerator=gpu"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python benchmarks/overhead.py --mnist-root "$root" --rounds 3 --nets conv mlp --baseline "plain cuda" --variants \
    "plain cuda" "plain cuda fused" "plain cuda fused channels_last" \
    "vae_zoo $gpu" "vae_zoo $gpu trainer.precision=bf16-mixed" "vae_zoo $gpu data.on_device=true" \
    "vae_zoo $gpu compile=true" "vae_zoo $gpu channels_last=false" \
    "vae_zoo $gpu trainer.precision=bf16-mixed data.on_device=true"
python benchmarks/evaluation_throughput.py --mnist-root "$root" --device cuda --examples 2000 --chunk-sizes 100 500
python benchmarks/celeba_shaped.py --device gpu --images 20000 --epochs 2 --models vae beta_vae
