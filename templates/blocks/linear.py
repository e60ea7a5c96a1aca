class LinearBlock(nn.Module):
    """One Linear map on the last dimension (an ablation: no two layers)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, dim)

    def forward(self, z: Tensor) -> Tensor:
        return self.fc(z)
