class ClassifierHead(nn.Module):
    """Global average pooling (spatial, or over tokens), LayerNorm, Linear.

    Args:
        features: width of the last stage.
        num_classes: outputs of the Linear; 0 for none (the pooled features).
        tokens: whether the input is [N, L, C] (else [N, C, H, W]).
    """

    def __init__(self, features: int, num_classes: int, tokens: bool = False) -> None:
        super().__init__()
        self.tokens = tokens
        self.norm = nn.LayerNorm(features)
        self.fc = nn.Linear(features, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int) -> None:
        features = self.norm.normalized_shape[0]
        self.fc = nn.Linear(features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.norm(x.mean(dim=1) if self.tokens else x.mean(dim=(2, 3)))
        return x if pre_logits else self.fc(x)


class FeatureHead(nn.Module):
    """`head none`: the last stage's output, unchanged."""

    def reset(self, num_classes: int) -> None:
        pass

    def forward(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return x
