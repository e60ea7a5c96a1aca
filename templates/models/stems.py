class ConvStem(nn.Module):
    """Conv-BN-ReLU: [N, in_chans, H, W] -> [N, out, H/stride, W/stride].

    Args:
        in_chans: channels of the image.
        out: channels of the first stage.
        kernel: odd kernel size.
        stride: stride of the convolution.
    """

    def __init__(self, in_chans: int, out: int, kernel: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out, kernel, stride=stride, padding=kernel // 2, bias=False)
        self.norm = nn.BatchNorm2d(out)
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x)))


class PatchStem(nn.Module):
    """ConvNeXt's stem: patchify (kernel = stride = size), LayerNorm.

    Args:
        in_chans: channels of the image.
        out: channels of the first stage.
        size: patch size.
    """

    def __init__(self, in_chans: int, out: int, size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out, size, stride=size)
        self.norm = nn.LayerNorm(out)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class TokenStem(nn.Module):
    """ViT's stem: patchify to tokens [N, L, out], a learned position embedding.

    Args:
        in_chans: channels of the image.
        out: width of the tokens.
        size: patch size.
        tokens: L, the number of patches of the declared input size.
    """

    def __init__(self, in_chans: int, out: int, size: int, tokens: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out, size, stride=size)
        self.position = nn.Parameter(torch.zeros(1, tokens, out))
        nn.init.trunc_normal_(self.position, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x).flatten(2).transpose(1, 2) + self.position
