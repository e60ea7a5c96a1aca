class MLP(nn.Module):
    """Two-layer perceptron on the last dimension: fc2(act(fc1(norm(z)))).

    Args:
        dim: feature size of input and output.
        hidden: width of the hidden layer.
        act: activation name.
        norm: "none" or "layer" (a LayerNorm before fc1).
    """

    def __init__(self, dim: int, hidden: int, act: str = "relu", norm: str = "none") -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim) if norm == "layer" else nn.Identity()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = _activation(act)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, z: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(self.norm(z))))
