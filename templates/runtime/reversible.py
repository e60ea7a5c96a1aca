class _ReversibleLayers(torch.autograd.Function):
    """`backward reversible`: forward runs the layers without keeping them for backward
    (only the last layer's slots are saved); backward undoes one layer at a time with the
    module's `_inverse_layer`, runs that layer again with grad enabled and backpropagates
    through it alone. Activation memory does not grow with depth; the price is one more
    forward of every layer, and rounding errors that grow through the reconstruction
    (CERTIFICATE["reversible"]["amplification"])."""

    @staticmethod
    def forward(ctx, module: nn.Module, count: int, *tensors: Tensor):
        slots = _layers(module, 0, module.depth, tensors[:count])
        # A slot the layers pass through (the input they read) is returned as a new tensor.
        slots = tuple(s.clone() if any(s is t for t in tensors) else s for s in slots)
        ctx.module, ctx.count, ctx.params = module, count, tensors[count:]
        ctx.save_for_backward(*slots)
        return slots

    @staticmethod
    def backward(ctx, *grads: Tensor):
        module, count, params = ctx.module, ctx.count, ctx.params
        index = {id(p): i for i, p in enumerate(params)}
        param_grads: list[Tensor | None] = [None] * len(params)
        after = ctx.saved_tensors
        for k in reversed(range(module.depth)):
            blocks = _layer_blocks(module, k, k + 1)
            used = [p for p in _layer_parameters(module, blocks) if id(p) in index]
            with torch.no_grad(), _KeptNormStatistics(blocks):
                before = module._inverse_layer(k, after)
            with torch.enable_grad(), _KeptNormStatistics(blocks):
                inputs = tuple(s.detach().requires_grad_() for s in before)
                outputs = module._layer(k, inputs)
                pairs = [(o, g) for o, g in zip(outputs, grads) if o.requires_grad]
                found = torch.autograd.grad(
                    [o for o, _ in pairs],
                    inputs + tuple(used),
                    [g for _, g in pairs],
                    allow_unused=True,
                )
            grads = tuple(
                torch.zeros_like(s) if g is None else g for g, s in zip(found[:count], before)
            )
            for p, g in zip(used, found[count:]):
                if g is not None:
                    i = index[id(p)]
                    param_grads[i] = g if param_grads[i] is None else param_grads[i] + g
            after = before
        return (None, None, *grads, *param_grads)


def _layer_parameters(module: nn.Module, blocks: list[nn.Module]) -> list[nn.Parameter]:
    """What one layer reads: its blocks' parameters and the module's learnable params."""
    found = list(module._parameters.values())
    for block in blocks:
        found += list(block.parameters())
    return [p for p in found if p is not None and p.requires_grad]


def _reversible_layers(module: nn.Module, slots: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """The layer loop of a `backward reversible` module (the plain loop without grad)."""
    params = tuple(p for p in module.parameters() if p.requires_grad)
    needs_grad = any(s.requires_grad for s in slots) or bool(params)
    if not torch.is_grad_enabled() or not needs_grad:
        return _layers(module, 0, module.depth, slots)
    return _ReversibleLayers.apply(module, len(slots), *slots, *params)


# The fixed-point solve of `backward reversible` (a block argument the next layer's slots
# give back only through an equation, e.g. Nesterov's y = x+ + t*T(y)): the relative
# residual it stops at, 1e-12 where the dtype resolves it (float64), a few units of the
# dtype's rounding otherwise, and a bound on the iterations.
_INVERSE_TOL = 1e-12
_INVERSE_MAX_ITER = 200


def _inverse_tolerance(dtype: torch.dtype) -> float:
    return max(_INVERSE_TOL, 16 * torch.finfo(dtype).eps)


def _inverse_residual(new: tuple[Tensor, ...], old: tuple[Tensor, ...]) -> float:
    """max over the unknowns and samples of ||new - old|| / ||new||."""
    worst = 0.0
    for a, b in zip(new, old):
        diff = (a - b).flatten(1) if a.dim() > 1 else (a - b).reshape(1, -1)
        size = a.flatten(1) if a.dim() > 1 else a.reshape(1, -1)
        ratio = diff.norm(dim=1) / size.norm(dim=1).clamp_min(1e-30)
        # An overflowing iteration gives nan, which max() would pass over: never converged.
        worst = max(worst, torch.nan_to_num(ratio, nan=float("inf")).max().item())
    return worst


def _solve_inverse(module: nn.Module, fn, start):
    """v <- fn(v) from `start` (a tensor, or a tuple of them for coupled unknowns) until
    the relative residual meets the dtype's tolerance; warns once per module when the
    iteration stops at its bound (t*Lip(T) < 1 fails: the gradients are then wrong)."""
    single = isinstance(start, Tensor)
    value = (start,) if single else tuple(start)
    tol = _inverse_tolerance(value[0].dtype)
    residual = float("inf")
    for _ in range(_INVERSE_MAX_ITER):
        new = fn(*value)
        new = (new,) if single else tuple(new)
        residual = _inverse_residual(new, value)
        value = new
        if residual <= tol:
            break
    else:
        if not getattr(module, "_inverse_warned", False):
            module._inverse_warned = True
            warnings.warn(
                f"{type(module).__name__}: backward reversible's fixed-point reconstruction"
                f" stopped after {_INVERSE_MAX_ITER} iterations at relative residual"
                f" {residual:.3g} (tolerance {tol:.3g}); it converges only when the step times"
                " the block's Lipschitz constant is below 1 (see CERTIFICATE['reversible']),"
                " so the gradients are not exact",
                RuntimeWarning,
                stacklevel=2,
            )
    return value[0] if single else value
