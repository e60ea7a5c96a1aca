class ConvBlock(nn.Module):
    """Pre-activation residual branch on [N, dim, H, W]: BN-act-Conv twice.

    Args:
        dim: channels of input and output.
        hidden: channels between the two convolutions.
        kernel: odd kernel size (padding keeps H and W).
        act: activation name.
    """

    def __init__(self, dim: int, hidden: int, kernel: int = 3, act: str = "relu") -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(dim)
        self.act1 = _activation(act)
        self.conv1 = nn.Conv2d(dim, hidden, kernel, padding=kernel // 2, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.act2 = _activation(act)
        self.conv2 = nn.Conv2d(hidden, dim, kernel, padding=kernel // 2, bias=False)

    def forward(self, z: Tensor) -> Tensor:
        # One operation a line: z holds one intermediate at a time.
        z = self.bn1(z)
        z = self.act1(z)
        z = self.conv1(z)
        z = self.bn2(z)
        z = self.act2(z)
        return self.conv2(z)
