class _Learnable:
    """How the rule reads one learnable param from its raw `nn.Parameter`."""

    def __init__(
        self,
        attr: str,
        how: str,
        lo: float,
        hi: float | None,
        per_layer: bool,
        declared: str,
        per_channel: bool = False,
    ) -> None:
        self.attr, self.how, self.lo, self.hi = attr, how, lo, hi
        self.per_layer, self.per_channel = per_layer, per_channel
        self.declared = declared

    def value(self, raw: Tensor) -> Tensor:
        """The constrained value `forward` computes from the raw parameter."""
        if self.how == "softplus":
            return torch.nn.functional.softplus(raw)
        if self.how == "sigmoid":
            return torch.sigmoid(raw) * (self.hi - self.lo) + self.lo
        return raw

    def raw(self, name: str, value: Tensor) -> Tensor:
        """The raw parameter giving `value` (float64); ValueError outside."""
        if not torch.isfinite(value).all():
            raise ValueError(f"{name} must be finite, got {value.tolist()}")
        if self.how == "softplus":
            if (value <= 0).any():
                raise ValueError(f"{name} must be > 0 ({self.declared})," f" got {value.tolist()}")
            # log(expm1(v)), written so that a large v does not overflow
            return value + torch.log(-torch.expm1(-value))
        if self.how == "sigmoid":
            if ((value <= self.lo) | (value >= self.hi)).any():
                interval = f"({self.lo:g}, {self.hi:g})"
                raise ValueError(
                    f"{name} must lie in {interval}, the values its sigmoid"
                    f" reaches ({self.declared}), got {value.tolist()}"
                )
            return torch.logit((value - self.lo) / (self.hi - self.lo))
        return value


def _param_values(module: nn.Module) -> dict[str, Tensor]:
    """`module.params()`: every param at the value the rule uses, detached."""
    reference = next(module.parameters(), None)
    dtype = reference.dtype if reference is not None else torch.get_default_dtype()
    device = reference.device if reference is not None else None
    values = {}
    for name in module.PARAM_NAMES:
        if name in module.LEARNABLE_PARAMS:
            spec = module.LEARNABLE_PARAMS[name]
            raw = getattr(module, spec.attr)
            # A scalar is stored with shape [1] (for FSDP2) and reported 0-dim.
            value = spec.value(raw if spec.per_layer or spec.per_channel else raw[0])
            values[name] = value.detach().clone()
        else:
            values[name] = torch.tensor(module.fixed_params[name], dtype=dtype, device=device)
    return values


def _set_param_values(module: nn.Module, values: dict) -> None:
    """`module.set_params(**values)`: the raw parameters that give `values`,
    computed in float64 and cast to the module's dtype. Checks every value
    before it sets any."""
    updates = []
    for name, value in values.items():
        if name not in module.PARAM_NAMES:
            known = ", ".join(module.LEARNABLE_PARAMS) or "none"
            raise ValueError(
                f"{type(module).__name__} has no param {name!r};" f" learnable: {known}"
            )
        if name not in module.LEARNABLE_PARAMS:
            raise ValueError(
                f"param {name} is fixed (a constant of the rule):" " change the .opt file"
            )
        spec = module.LEARNABLE_PARAMS[name]
        parameter = getattr(module, spec.attr)
        value = torch.as_tensor(value, dtype=torch.float64).detach().cpu()
        if value.dim() == 0:
            value = value.expand(parameter.shape)
        if value.shape != parameter.shape:
            shape = list(value.shape)
            raise ValueError(
                f"{name} takes {parameter.numel()} value(s) (one, or shape"
                f" {list(parameter.shape)}), got shape {shape}"
            )
        raw = spec.raw(name, value)
        _check_stored(name, spec, raw.to(parameter.dtype), value)
        updates.append((parameter, raw))
    with torch.no_grad():
        for parameter, raw in updates:
            parameter.copy_(raw.to(device=parameter.device, dtype=parameter.dtype))


def _check_stored(name: str, spec: _Learnable, raw: Tensor, value: Tensor) -> None:
    """ValueError when `value`, stored in the module's dtype, rounds outside
    its range: 1e39 is inf in float32, 1 - 1e-12 rounds to 1.0, outside
    [0, 1), and 1e-300 to 0.0."""
    stored = spec.value(raw)
    dtype = str(raw.dtype).removeprefix("torch.")
    given = f"{name} = {value.tolist()}"
    if not torch.isfinite(stored).all():
        raise ValueError(f"{given} is not finite in {dtype}")
    if spec.how == "softplus" and (stored <= 0).any():
        raise ValueError(f"{given} rounds to 0 in {dtype}," f" outside its range ({spec.declared})")
    if spec.how == "sigmoid" and ((stored < spec.lo) | (stored >= spec.hi)).any():
        raise ValueError(
            f"{given} rounds to {stored.tolist()} in {dtype},"
            f" outside its range ({spec.declared})"
        )


def _start(module: nn.Module, attr: str, values: list[float]) -> nn.Parameter:
    """A raw parameter at its start value, kept exactly in float64."""
    start = torch.tensor(values, dtype=torch.float64)
    module.__dict__.setdefault("_start_raw", {})[attr] = start
    return nn.Parameter(start.to(torch.get_default_dtype()))


def _params_at_start(module: nn.Module) -> list[str]:
    """The raw parameters still at their start value, bit for bit."""
    found = []
    for attr, start in module.__dict__.get("_start_raw", {}).items():
        p = getattr(module, attr)
        plain = type(p.data) is torch.Tensor and p.device.type != "meta"
        if plain and p.is_floating_point() and torch.equal(p.detach().cpu(), start.to(p.dtype)):
            found.append(attr)
    return found


def _restore_starts(module: nn.Module, attrs: list[str]) -> None:
    """After a dtype change: those parameters take their float64 start."""
    with torch.no_grad():
        for attr in attrs:
            p = getattr(module, attr)
            p.copy_(module._start_raw[attr].to(device=p.device, dtype=p.dtype))
