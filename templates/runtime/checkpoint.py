def _checkpointed_layers(module: nn.Module, slots: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """`checkpoint N`: the layers in groups of `module.checkpoint`, each group
    keeping only its input slots for backward and computed again there
    (torch.utils.checkpoint, non-reentrant). 0 or None runs the plain loop,
    which keeps every layer's activations."""
    every = module.checkpoint
    if not every or not torch.is_grad_enabled():
        return _layers(module, 0, module.depth, slots)
    for first in range(0, module.depth, every):
        last = min(first + every, module.depth)
        blocks = _layer_blocks(module, first, last)

        def contexts(blocks=blocks):
            return torch.utils.checkpoint.noop_context_fn()[0], _KeptNormStatistics(blocks)

        # The slots as separate arguments: checkpoint saves each tensor
        # argument for backward (where saved_tensors_hooks see it), and nothing
        # else of the group.
        slots = torch.utils.checkpoint.checkpoint(
            _layer_group, module, first, last, *slots, use_reentrant=False, context_fn=contexts
        )
    return slots


def _layer_group(module: nn.Module, first: int, last: int, *slots: Tensor) -> tuple[Tensor, ...]:
    return _layers(module, first, last, slots)


def _check_checkpoint(checkpoint) -> None:
    ok = checkpoint is None or (
        isinstance(checkpoint, int) and not isinstance(checkpoint, bool) and checkpoint >= 0
    )
    if not ok:
        raise ValueError(
            "checkpoint must be a number of layers per group (0 or None: off),"
            f" got {checkpoint!r}"
        )
