"""tools/train/nets.py — the U-Net family networks segnode ships, in plain PyTorch (exportable
with export.py): an nnU-Net-style 3-D U-Net (conv - instance norm - leaky ReLU, strided-conv
down-sampling, transposed-conv up-sampling) and the 2-D DuSEUNet of AccSeg-Net (conv - batch
norm - ReLU blocks with concurrent channel and spatial squeeze-and-excitation)."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvNormAct(nn.Sequential):
    def __init__(self, cin, cout, stride=1, dims=3):
        Conv = nn.Conv3d if dims == 3 else nn.Conv2d
        Norm = nn.InstanceNorm3d if dims == 3 else nn.InstanceNorm2d
        super().__init__(Conv(cin, cout, 3, stride=stride, padding=1),
                         Norm(cout, eps=1e-5, affine=True),
                         nn.LeakyReLU(0.01, inplace=True))


class UNet3D(nn.Module):
    """nnU-Net's PlainConvUNet: features min(32 * 2^i, 320), two convs per stage."""

    def __init__(self, in_ch=1, n_classes=3, features=(32, 64, 128, 256, 320, 320)):
        super().__init__()
        self.enc = nn.ModuleList()
        c = in_ch
        for i, f in enumerate(features):
            self.enc.append(nn.Sequential(ConvNormAct(c, f, 1 if i == 0 else 2), ConvNormAct(f, f)))
            c = f
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for i in range(len(features) - 1, 0, -1):
            self.up.append(nn.ConvTranspose3d(features[i], features[i - 1], 2, stride=2))
            self.dec.append(nn.Sequential(ConvNormAct(2 * features[i - 1], features[i - 1]),
                                          ConvNormAct(features[i - 1], features[i - 1])))
        self.head = nn.Conv3d(features[0], n_classes, 1)

    def forward(self, x):
        skips = []
        for e in self.enc:
            x = e(x)
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(self.up, self.dec):
            x = up(x)
            x = dec(torch.cat([x, skips.pop()], 1))
        return self.head(x)


class ChannelSE(nn.Module):
    def __init__(self, c, r=2):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(c, max(1, c // r))
        self.fc2 = nn.Linear(max(1, c // r), c)

    def forward(self, x):
        b, c = x.shape[0], x.shape[1]
        y = self.pool(x).view(b, c)
        y = torch.sigmoid(self.fc2(F.relu(self.fc1(y)))).view(b, c, 1, 1)
        return x * y


class SpatialSE(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, 1, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.conv(x))


class DuSEBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout),
                                  nn.ReLU(inplace=True),
                                  nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout),
                                  nn.ReLU(inplace=True))
        self.cse = ChannelSE(cout)
        self.sse = SpatialSE(cout)

    def forward(self, x):
        x = self.conv(x)
        return self.cse(x) + self.sse(x)


class DuSEUNet2D(nn.Module):
    def __init__(self, in_ch=1, n_classes=3, features=(16, 32, 64, 128)):
        super().__init__()
        self.enc = nn.ModuleList()
        c = in_ch
        for f in features:
            self.enc.append(DuSEBlock(c, f))
            c = f
        self.pool = nn.MaxPool2d(2)
        self.dec = nn.ModuleList()
        for i in range(len(features) - 1, 0, -1):
            self.dec.append(DuSEBlock(features[i] + features[i - 1], features[i - 1]))
        self.head = nn.Conv2d(features[0], n_classes, 1)

    def forward(self, x):
        skips = []
        for i, e in enumerate(self.enc):
            x = e(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for d in self.dec:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = d(torch.cat([x, skips.pop()], 1))
        return self.head(x)


def randomize_norm_stats(model, seed=0):
    """Give batch norms non-trivial running statistics (tests of the folding)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm3d, nn.InstanceNorm2d,
                          nn.GroupNorm)) and m.affine:
            m.weight.data.copy_(1 + 0.1 * torch.randn(m.weight.shape, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    return model
