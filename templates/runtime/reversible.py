class _Reconstruction:
    """What the layers of one reversible forward pass along in backward: the
    slots after the layer being undone next. Layer k's backward rebuilds the
    slots before it from these and leaves them here for layer k - 1, so no
    state of an earlier layer is kept from forward."""

    def __init__(self) -> None:
        self.after: tuple[Tensor, ...] | None = None


class _ReversibleLayer(torch.autograd.Function):
    """Layer k of a `backward reversible` module as one autograd node.

    Forward runs the layer without keeping its input (the last layer alone
    saves its output slots); backward takes the slots after the layer from the
    layer above (or its saved ones), undoes it with the module's
    `_inverse_layer`, runs it again with grad enabled and backpropagates
    through it alone. Each layer returns its own parameters' gradients, which
    autograd adds into `.grad` and frees before the layer below runs, as in
    plain autograd. Activation memory does not grow with depth; the price is
    the inverse of every layer (for an exact one, one more call of each block,
    which the recompute reuses), and rounding errors that grow through the
    reconstruction (CERTIFICATE["reversible"]["amplification"]). Backward is
    not differentiable again: a second-order gradient through it is an error,
    not zero.
    """

    @staticmethod
    def forward(ctx, module: nn.Module, k: int, tape: _Reconstruction, count: int, *tensors):
        inputs = tensors[:count]
        slots = module._layer(k, inputs)
        # A slot the layer passes through (x_prev = x) is returned as a view of
        # its input: a custom Function's output must be a tensor of its own,
        # and a view copies nothing.
        slots = tuple(s.view_as(s) if any(s is t for t in inputs) else s for s in slots)
        ctx.module, ctx.k, ctx.tape, ctx.count = module, k, tape, count
        ctx.params = tensors[count:]
        # Backward runs outside the caller's autocast: the inverse and the recompute
        # enter it again, so that they compute what forward computed.
        ctx.autocast = _autocast_state(inputs[0].device.type)
        ctx.last = k == module.depth - 1
        if ctx.last:
            ctx.save_for_backward(*slots)
        return slots

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads: Tensor):
        module, k, tape, count = ctx.module, ctx.k, ctx.tape, ctx.count
        # Each backward starts again from the saved output (retain_graph works).
        after = ctx.saved_tensors if ctx.last else tape.after
        blocks = _layer_blocks(module, k, k + 1)
        calls = module.__dict__["_kept_block_calls"] = _KeptBlockCalls()
        # The running statistics come back once this layer's graphs are done
        # with: a kept block call's graph saved them as they were.
        try:
            with _KeptNormStatistics(blocks), torch.autocast(*ctx.autocast):
                with torch.no_grad():
                    before = module._inverse_layer(k, after)
                tape.after = before if k > 0 else None
                with torch.enable_grad():
                    inputs = calls.leaves(before)
                    outputs = module._layer(k, inputs)
                    pairs = [(o, g) for o, g in zip(outputs, grads, strict=True) if o.requires_grad]
                    found = torch.autograd.grad(
                        [o for o, _ in pairs],
                        inputs + tuple(ctx.params),
                        [g for _, g in pairs],
                        allow_unused=True,
                    )
        finally:
            del module.__dict__["_kept_block_calls"]
        slot_grads = tuple(
            torch.zeros_like(s) if g is None else g
            for g, s in zip(found[:count], before, strict=True)
        )
        return (None, None, None, None, *slot_grads, *found[count:])


def _autocast_state(device: str) -> tuple[str, torch.dtype | None, bool]:
    """The arguments of `torch.autocast` that restore the autocast on `device`
    (a device with none, such as meta: a CPU autocast turned off)."""
    try:
        enabled = torch.is_autocast_enabled(device)
        dtype = torch.get_autocast_dtype(device)
    except TypeError:  # torch < 2.4 takes no device here
        cpu = device == "cpu"
        enabled = torch.is_autocast_cpu_enabled() if cpu else torch.is_autocast_enabled()
        dtype = torch.get_autocast_cpu_dtype() if cpu else torch.get_autocast_gpu_dtype()
    except RuntimeError:  # no autocast on this device type
        enabled = False
    return (device, dtype, True) if enabled else ("cpu", None, False)


class _KeptBlockCalls:
    """The block outputs one layer's backward computes in `_inverse_layer` and
    reuses in `_layer`: heavy ball's inverse evaluates T at the x it rebuilds,
    the very call the layer makes, so that output is computed once, with its
    graph, from a leaf that then stands for the slot."""

    def __init__(self) -> None:
        self.kept: dict[tuple[int, int], tuple[Tensor, Tensor]] = {}  # (block, leaf) ids
        self.leaf_of: dict[int, tuple[Tensor, Tensor]] = {}  # input id -> (input, leaf)

    def keep(self, block: nn.Module, z: Tensor) -> Tensor:
        leaf = z.detach().requires_grad_()
        with torch.enable_grad():
            out = block(leaf)
        self.kept[id(block), id(leaf)] = (leaf, out)
        self.leaf_of.setdefault(id(z), (z, leaf))
        return out.detach()

    def reuse(self, block: nn.Module, z: Tensor) -> Tensor:
        found = self.kept.get((id(block), id(z)))
        return found[1] if found is not None and found[0] is z else block(z)

    def leaves(self, before: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """The inputs `_layer` is differentiated at: a slot the inverse passed
        to a block is that call's leaf (a repeated slot gets a leaf of its
        own)."""
        found, used = [], set()
        for s in before:
            entry = self.leaf_of.get(id(s))
            if entry is not None and entry[0] is s and id(entry[1]) not in used:
                found.append(entry[1])
                used.add(id(entry[1]))
            else:
                found.append(s.detach().requires_grad_())
        return tuple(found)


def _keep_block_call(module: nn.Module, block: nn.Module, z: Tensor) -> Tensor:
    """A block call of `_inverse_layer`, kept for the layer's recompute."""
    calls = module.__dict__.get("_kept_block_calls")
    return block(z) if calls is None else calls.keep(block, z)


def _reuse_block_call(module: nn.Module, block: nn.Module, z: Tensor) -> Tensor:
    """A block call of `_layer`: the output backward already has, if any."""
    calls = module.__dict__.get("_kept_block_calls")
    return block(z) if calls is None else calls.reuse(block, z)


def _layer_parameters(module: nn.Module, blocks: list[nn.Module]) -> list[nn.Parameter]:
    """What one layer reads: its blocks' and the module's own parameters."""
    found = list(module._parameters.values())
    for block in blocks:
        found += list(block.parameters())
    return [p for p in found if p is not None and p.requires_grad]


def _reversible_layers(module: nn.Module, slots: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """The layer loop of `backward reversible` (the plain loop without grad)."""
    needs_grad = any(s.requires_grad for s in slots) or any(
        p.requires_grad for p in module.parameters()
    )
    if not torch.is_grad_enabled() or not needs_grad:
        return _layers(module, 0, module.depth, slots)
    tape = _Reconstruction()
    for k in range(module.depth):
        params = _layer_parameters(module, _layer_blocks(module, k, k + 1))
        slots = _ReversibleLayer.apply(module, k, tape, len(slots), *slots, *params)
    return slots


# What float32 carries through the reconstruction (the compiler's check of
# the declared depth, analysis/reversible.py): 2^-23 grown past 1e-3.
_FLOAT32_EPS = 2.0**-23
_FLOAT32_ERROR_LIMIT = 1e-3


def _check_reconstruction(module: nn.Module) -> None:
    """Warns when a depth past the declared one takes the rounding error of
    backward's reconstruction beyond what float32 carries: the amplification
    the certificate gives for the declared depth grows by about `growth` with
    each further layer."""
    field, declared = module.CERTIFICATE["reversible"], module.CERTIFICATE["depth"]
    amplification, growth = field["amplification"], field.get("growth")
    if module.depth <= declared or amplification is None or growth is None:
        return
    estimate = amplification * growth ** (module.depth - declared)
    if estimate * _FLOAT32_EPS <= _FLOAT32_ERROR_LIMIT:
        return
    warnings.warn(
        f"{type(module).__name__}(depth={module.depth}): backward reversible's"
        f" reconstruction grows a rounding error by about {estimate:.3g} over"
        f" {module.depth} layers (the certificate's {amplification:.3g} at"
        f" {declared} layers, times {growth:.4g} a layer), more than float32"
        " carries: train it in float64 (module.double()), use fewer layers or"
        " a momentum closer to 1",
        RuntimeWarning,
        stacklevel=3,
    )


# The fixed-point solve of `backward reversible` (a block argument the next
# layer's slots give back only through an equation, e.g. Nesterov's
# y = x+ + t*T(y)): the relative residual it stops at, 1e-12 where the dtype
# resolves it (float64), a few units of the dtype's rounding otherwise, and a
# bound on the iterations.
_INVERSE_TOL = 1e-12
_INVERSE_MAX_ITER = 200


def _inverse_tolerance(dtype: torch.dtype) -> float:
    return max(_INVERSE_TOL, 16 * torch.finfo(dtype).eps)


def _inverse_residual(new: tuple[Tensor, ...], old: tuple[Tensor, ...]) -> float:
    """max over the unknowns and samples of ||new - old|| / ||new||."""
    worst = 0.0
    for a, b in zip(new, old, strict=True):
        diff = (a - b).flatten(1) if a.dim() > 1 else (a - b).reshape(1, -1)
        size = a.flatten(1) if a.dim() > 1 else a.reshape(1, -1)
        ratio = diff.norm(dim=1) / size.norm(dim=1).clamp_min(1e-30)
        # An overflow gives nan, which max() would pass over: never converged.
        worst = max(worst, torch.nan_to_num(ratio, nan=float("inf")).max().item())
    return worst


def _solve_inverse(module: nn.Module, fn, start):
    """v <- fn(v) from `start` (a tensor, or a tuple of them for coupled
    unknowns) until the relative residual meets the dtype's tolerance; warns
    once per module when the iteration stops at its bound (t*Lip(T) < 1 fails:
    the gradients are then wrong)."""
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
                f"{type(module).__name__}: backward reversible's fixed-point"
                f" reconstruction stopped after {_INVERSE_MAX_ITER} iterations"
                f" at relative residual {residual:.3g} (tolerance {tol:.3g});"
                " it converges only when the step times the block's Lipschitz"
                " constant is below 1 (see CERTIFICATE['reversible']), so the"
                " gradients are not exact",
                RuntimeWarning,
                stacklevel=2,
            )
    return value[0] if single else value
