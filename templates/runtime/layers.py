def _layers(module: nn.Module, first: int, last: int, slots: tuple[Tensor, ...]):
    """Layers first..last-1 of `module` applied to the slots it carries."""
    for k in range(first, last):
        slots = module._layer(k, slots)
    return slots


def _layer_blocks(module: nn.Module, first: int, last: int) -> list[nn.Module]:
    """The block instances layers first..last-1 call (a shared one once)."""
    found = []
    for instances in module.blocks.values():
        found += [instances[min(k, len(instances) - 1)] for k in range(first, last)]
    return list({id(block): block for block in found}.values())


class _KeptNormStatistics:
    """Restores the BatchNorm running statistics of some blocks on exit: a
    layer computed again in backward (checkpoint, backward reversible)
    normalizes with the batch's statistics as in forward, and the running
    averages move once per step, not twice."""

    def __init__(self, blocks: list[nn.Module]) -> None:
        self.norms = [
            m for b in blocks for m in b.modules() if isinstance(m, nn.modules.batchnorm._NormBase)
        ]

    def __enter__(self) -> None:
        self.saved = [
            {name: buf.clone() for name, buf in m.named_buffers(recurse=False) if buf is not None}
            for m in self.norms
        ]

    def __exit__(self, *exc) -> None:
        with torch.no_grad():
            for m, buffers in zip(self.norms, self.saved, strict=True):
                for name, value in buffers.items():
                    getattr(m, name).copy_(value)
