class TransformerBlock(nn.Module):
    """Pre-norm attention and MLP on [N, L, dim]: a + MLP(z + a), a = Attn(z).

    Args:
        dim: model width, divisible by heads.
        heads: attention heads.
        expand: width factor of the MLP.
    """

    def __init__(self, dim: int, heads: int = 1, expand: int = 4) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} is not divisible by heads={heads}")
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, expand * dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(expand * dim, dim)

    def attention(self, z: Tensor) -> Tensor:
        n, length, dim = z.shape
        qkv = self.qkv(self.norm1(z)).reshape(n, length, 3, self.heads, dim // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(n, length, dim))

    def forward(self, z: Tensor) -> Tensor:
        a = self.attention(z)
        return a + self.fc2(self.act(self.fc1(self.norm2(z + a))))
