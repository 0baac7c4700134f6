"""Networks of unpaired image-to-image translation: CycleGAN (Zhu et al. 2017) and CUT (Park et al. 2020).

Networks only, no training logic. Faithful to the reference implementations, junyanz/pytorch-CycleGAN-and-pix2pix
`models/networks.py` and taesungp/contrastive-unpaired-translation `models/networks.py` and `models/patchnce.py`,
with the settings their CycleGAN / CUT recipes use: norm='instance', no dropout, init_type='normal' with gain 0.02,
reflection padding, strided convolutions down and transposed convolutions up (CUT's --no_antialias
--no_antialias_up, CycleGAN's only layout). Module names follow the reference (`model`, `conv_block`), so the
reference's state dicts of these nets load as they are. Images are in [-1, 1], N×C×H×W.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# CUT's default --nce_layers 0,4,8,12,16 steps through the flat layer sequence four layers at a time.
NCE_LAYER_STRIDE = 4


def init_weights(net: nn.Module, gain: float = 0.02) -> None:
    """The reference's init_type='normal': conv and linear weights N(0, gain), their biases 0. The norm layers here
    are InstanceNorm2d(affine=False), which have no parameters to initialise."""
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(module.weight, 0.0, gain)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def _norm(channels: int) -> nn.InstanceNorm2d:
    # The reference's norm='instance': no affine parameters, no running statistics (train and eval behave alike).
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


# Convolutions keep their bias although an affine-free instance norm follows: the reference does (use_bias is True
# for norm='instance'), and its parameter counts and state dicts include them. ReLUs are not in place (the
# reference's are): an in-place ReLU would overwrite the norm output encode() hands out at layer 8.


class ResnetBlock(nn.Module):
    """x + (reflect-pad, 3x3 conv, norm, ReLU, reflect-pad, 3x3 conv, norm)(x)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), _norm(channels), nn.ReLU(),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), _norm(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """c7s1-k, `downsamplings` stride-2 3x3 convs (k doubles each), `blocks` residual blocks, as many upsamplings
    (ConvTranspose2d k=3 s=2 p=1 op=1), c7s1-out, tanh; InstanceNorm and ReLU after every conv but the last.
    Fully convolutional: any H, W divisible by 2**downsamplings (and at least twice that, for the reflection
    padding of the blocks). ResnetGenerator(3, 3, 64, 9) is CycleGAN's resnet_9blocks, 11.378 M parameters."""

    def __init__(self, in_channels: int, out_channels: int, channels: int = 64, blocks: int = 9,
                 downsamplings: int = 2):
        super().__init__()
        if blocks < 0 or downsamplings < 0:
            raise ValueError(f"blocks and downsamplings must be >= 0, got {blocks} and {downsamplings}")
        self.downsamplings = downsamplings
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, channels, 7), _norm(channels),
                                   nn.ReLU()]
        for i in range(downsamplings):
            width = channels * 2**i
            layers += [nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), _norm(2 * width), nn.ReLU()]
        layers += [ResnetBlock(channels * 2**downsamplings) for _ in range(blocks)]
        for i in range(downsamplings, 0, -1):
            width = channels * 2**i
            layers += [nn.ConvTranspose2d(width, width // 2, 3, stride=2, padding=1, output_padding=1),
                       _norm(width // 2), nn.ReLU()]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(channels, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        self._channels = _output_channels(self.model, in_channels)
        init_weights(self)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images N×in×H×W -> N×out×H×W in [-1, 1]; `labels` is ignored (the engine calls nets as net(x, labels))."""
        self._check_size(x)
        return self.model(x)

    def encode(self, x: torch.Tensor, layers: tuple[int, ...]) -> list[torch.Tensor]:
        """CUT's encode_only: the outputs of the listed layers of `self.model`, in the order asked; the layers after
        the last one asked are not run."""
        self._check_size(x)
        wanted = set(self._check_layers(layers))
        outputs = {}
        for index in range(max(wanted) + 1):
            x = self.model[index](x)
            if index in wanted:
                outputs[index] = x
        return [outputs[index] for index in layers]

    def layer_channels(self, layers: tuple[int, ...]) -> list[int]:
        """The channels of each encode() output, to size PatchSampleMLP."""
        return [self._channels[index] for index in self._check_layers(layers)]

    @staticmethod
    def nce_layers(blocks: int, downsamplings: int = 2) -> tuple[int, ...]:
        """CUT's default PatchNCE layers scaled to this depth: every 4th layer of `model` from 0 (the padded input)
        up to the last residual block, the end of the encoder. For blocks=9, downsamplings=2 that is exactly the
        reference's (0, 4, 8, 12, 16): padded input, first downsampling conv, second downsampling's norm, blocks 3
        and 7. Fewer blocks drop the layers past the encoder, where the reference's fixed indices would reach into
        the decoder: blocks=3 or 4 (or 6) -> (0, 4, 8, 12), the last block or block 3; more depth adds layers:
        blocks=9, downsamplings=3 -> (0, 4, 8, 12, 16, 20)."""
        last_block = 3 + 3 * downsamplings + blocks  # stem: 4 layers, each downsampling: 3, each block: 1
        return tuple(range(0, last_block + 1, NCE_LAYER_STRIDE))

    def _check_size(self, x: torch.Tensor) -> None:
        factor = 2**self.downsamplings
        if x.shape[-2] % factor or x.shape[-1] % factor:
            raise ValueError(f"ResnetGenerator with {self.downsamplings} downsamplings needs H and W divisible by "
                             f"{factor}, got {tuple(x.shape[-2:])}")

    def _check_layers(self, layers: tuple[int, ...]) -> tuple[int, ...]:
        if not layers or not all(0 <= index < len(self.model) for index in layers):
            raise ValueError(f"layers must be a non-empty selection of 0..{len(self.model) - 1}, got {layers}")
        return layers


def _output_channels(sequence: nn.Sequential, channels: int) -> list[int]:
    """The channel count after each layer of `sequence` (only convolutions change it)."""
    counts = []
    for layer in sequence:
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            channels = layer.out_channels
        counts.append(channels)
    return counts


class PatchDiscriminator(nn.Module):
    """PatchGAN (the reference's netD='basic' / 'n_layers'): 4x4 convs with padding 1, LeakyReLU 0.2, InstanceNorm
    after every conv but the first and the last, channels doubling up to 8x; stride 2 for the first `layers` convs,
    then one stride-1 conv and a 1-channel stride-1 conv: an N×1×h×w map of logits, one per overlapping patch. With
    layers=3 each logit sees a 70x70 patch; PatchDiscriminator(3, 64, 3) has 2.765 M parameters."""

    def __init__(self, in_channels: int, channels: int = 64, layers: int = 3):
        super().__init__()
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        sequence: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        mult = 1
        for n in range(1, layers + 1):
            previous, mult = mult, min(2**n, 8)
            stride = 2 if n < layers else 1
            sequence += [nn.Conv2d(channels * previous, channels * mult, 4, stride=stride, padding=1),
                         _norm(channels * mult), nn.LeakyReLU(0.2)]
        sequence.append(nn.Conv2d(channels * mult, 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*sequence)
        init_weights(self)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images N×C×H×W -> logits N×1×h×w; `labels` is ignored."""
        return self.model(x)


class PatchSampleMLP(nn.Module):
    """CUT's PatchSampleF with netF='mlp_sample': per encoder layer a Linear-ReLU-Linear MLP to `units` features,
    applied to sampled spatial locations, then L2-normalised as the reference does (x / (|x| + 1e-7)). Unlike the
    reference, the MLPs are built here from the known channel counts instead of lazily at the first forward, so
    optimizers and DDP see them at once."""

    def __init__(self, channels: list[int], units: int = 256):
        super().__init__()
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(c, units), nn.ReLU(), nn.Linear(units, units))
                                  for c in channels)
        init_weights(self)

    def forward(self, features: list[torch.Tensor], num_patches: int, patch_ids: list[torch.Tensor] | None = None,
                generator: torch.Generator | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per layer the (N*P)×units features of P locations of every image (image-major: rows n*P..n*P+P-1 are
        image n) and the P location ids (row-major indices into h*w, the same for every image, as the reference).
        Without `patch_ids`, each layer keeps the first min(num_patches, h*w) of a random permutation drawn with
        `generator` on its device (CPU by default: the reference avoids randperm on CUDA); with them (the query
        takes the key's ids), those locations."""
        if len(features) != len(self.mlps):
            raise ValueError(f"PatchSampleMLP was built for {len(self.mlps)} layers, got {len(features)} features")
        if patch_ids is not None and len(patch_ids) != len(features):
            raise ValueError(f"{len(features)} features but {len(patch_ids)} patch id sets")
        if patch_ids is None and num_patches < 1:
            raise ValueError(f"num_patches must be >= 1, got {num_patches}")
        samples, ids = [], []
        for layer, (feature, mlp) in enumerate(zip(features, self.mlps)):
            flat = feature.flatten(2).transpose(1, 2)  # N × h*w × C, locations in row-major order
            if patch_ids is None:
                device = generator.device if generator is not None else torch.device("cpu")
                chosen = torch.randperm(flat.shape[1], generator=generator, device=device)[:num_patches]
            else:
                chosen = patch_ids[layer]
            chosen = chosen.to(feature.device)
            sample = mlp(flat[:, chosen].flatten(0, 1))
            samples.append(sample / (sample.norm(dim=1, keepdim=True) + 1e-7))
            ids.append(chosen)
        return samples, ids


def patch_nce_loss(query: torch.Tensor, key: torch.Tensor, batch_size: int, temperature: float = 0.07) -> torch.Tensor:
    """PatchNCE for one layer (the reference's PatchNCELoss, then the mean CUTModel takes). query and key are
    (N*P)×units as PatchSampleMLP returns them, N = batch_size. Each query patch's positive is the key patch at the
    same location, its negatives the other key patches of the same image
    (nce_includes_all_negatives_from_minibatch=False); the same-location entry of the negatives is masked to -10
    (exp(-10) ~ 0) before the division by the temperature. Cross-entropy with the positive as target, mean over all
    patches. The key is detached: the loss trains the query's path only."""
    if query.shape != key.shape or query.dim() != 2 or query.shape[0] % batch_size:
        raise ValueError(f"query and key must be equal (N*P)×D with N={batch_size}, got {tuple(query.shape)} and "
                         f"{tuple(key.shape)}")
    key = key.detach()
    positives = (query * key).sum(dim=1, keepdim=True)  # (N*P)×1
    per_image_q = query.view(batch_size, -1, query.shape[1])
    per_image_k = key.view(batch_size, -1, key.shape[1])
    patches = per_image_q.shape[1]
    negatives = per_image_q @ per_image_k.transpose(1, 2)  # N×P×P
    same = torch.eye(patches, dtype=torch.bool, device=query.device)
    negatives = negatives.masked_fill(same, -10.0).view(-1, patches)
    logits = torch.cat([positives, negatives], dim=1) / temperature
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=query.device)
    return F.cross_entropy(logits, target)
