class ConvNeXtBlock(nn.Module):
    """ConvNeXt branch on [N, dim, H, W]: dwconv, LayerNorm, 1x1, GELU, 1x1.

    Args:
        dim: channels of input and output.
        kernel: odd depthwise kernel size.
        expand: width factor of the pointwise MLP.
    """

    def __init__(self, dim: int, kernel: int = 7, expand: int = 4) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, expand * dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(expand * dim, dim)

    def forward(self, z: Tensor) -> Tensor:
        # One operation a line: z holds one intermediate at a time.
        z = self.dwconv(z).permute(0, 2, 3, 1)
        z = self.norm(z)
        z = self.fc1(z)
        z = self.act(z)
        z = self.fc2(z)
        return z.permute(0, 3, 1, 2)
