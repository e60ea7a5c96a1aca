class DownConv(nn.Module):
    """Strided conv and BatchNorm: H and W divided by the stride."""

    def __init__(self, dim: int, out: int, stride: int = 2, kernel: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, out, kernel, stride=stride, padding=kernel // 2, bias=False)
        self.norm = nn.BatchNorm2d(out)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv(x))


class DownPool(nn.Module):
    """Average pooling, a 1x1 conv when the channels change, and BatchNorm."""

    def __init__(self, dim: int, out: int, stride: int = 2) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(stride)
        self.conv = nn.Conv2d(dim, out, 1, bias=False) if out != dim else nn.Identity()
        self.norm = nn.BatchNorm2d(out)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv(self.pool(x)))


class UpConv(nn.Module):
    """Nearest upsampling, conv and BatchNorm: H and W times the scale."""

    def __init__(self, dim: int, out: int, scale: int = 2, kernel: int = 3) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=scale, mode="nearest")
        self.conv = nn.Conv2d(dim, out, kernel, padding=kernel // 2, bias=False)
        self.norm = nn.BatchNorm2d(out)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv(self.up(x)))


class Norm(nn.Module):
    """BatchNorm on [N, C, H, W], LayerNorm on tokens [N, L, C]; same width."""

    def __init__(self, dim: int, tokens: bool = False) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim) if tokens else nn.BatchNorm2d(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x)
