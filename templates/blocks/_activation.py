def _activation(name: str) -> nn.Module:
    """The activation module for a block's `act` argument: those this file builds."""
    table = {
        "relu": nn.ReLU,
        "gelu": nn.GELU,
        "tanh": nn.Tanh,
        "sigmoid": nn.Sigmoid,
        "silu": nn.SiLU,
        "elu": nn.ELU,
        "softplus": nn.Softplus,
        "leaky_relu": nn.LeakyReLU,
        "identity": nn.Identity,
    }
    return table[name]()
