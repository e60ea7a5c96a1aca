def _per_sample(z: Tensor) -> Tensor:
    """z as [batch, features]: the first dimension is the batch."""
    return z.flatten(1) if z.dim() > 1 else z.reshape(1, -1)


def _relative_residual(fz: Tensor, z: Tensor) -> Tensor:
    """||f(z) - z|| / ||f(z)|| per sample (independent of tensor size)."""
    diff = _per_sample(fz - z).norm(dim=1)
    return diff / _per_sample(fz).norm(dim=1).clamp_min(1e-30)


def _fixed_point(f, z: Tensor, max_iter: int, tol: float, **_) -> tuple[Tensor, int, float]:
    """Plain fixed-point iteration z <- f(z), until every sample meets tol."""
    residual = float("inf")
    iterations = 0
    while iterations < max_iter:
        iterations += 1
        fz = f(z)
        residual = _relative_residual(fz, z).max().item()
        z = fz
        if residual <= tol or residual != residual:
            break
    return z, iterations, residual


def _anderson(
    f, z: Tensor, max_iter: int, tol: float, m: int = 5, lam: float = 1e-4, **_
) -> tuple[Tensor, int, float]:
    """Anderson acceleration of z <- f(z) with memory m, batched per sample.

    Each step mixes the last m values of f with weights alpha (sum 1) that
    minimise ||sum_i alpha_i (f(x_i) - x_i)||; lists, not buffers written in
    place, so that `backward unroll` can differentiate through it.
    """
    shape = z.shape
    # The small least-squares problem in float32 at least, outside autocast:
    # LU has no float16/bfloat16 kernel; the mixed iterate keeps z's dtype.
    work = torch.promote_types(z.dtype, torch.float32)
    xs = [_per_sample(z)]
    fs = [_per_sample(f(z))]
    residual = _relative_residual(fs[-1], xs[-1]).max().item()
    iterations = 1
    while residual > tol and residual == residual and iterations < max_iter:
        with torch.autocast(z.device.type, enabled=False):
            x_hist = torch.stack([v.to(work) for v in xs], dim=1)
            f_hist = torch.stack([v.to(work) for v in fs], dim=1)
            g = f_hist - x_hist
            eye = torch.eye(g.shape[1], dtype=work, device=z.device)
            gram = torch.bmm(g, g.transpose(1, 2))
            # Regularized relative to the Gram matrix's own scale (its largest
            # diagonal entry): an absolute lam takes over once the residuals
            # are small and slows the last digits (57 iterations against 17 at
            # tol 1e-13).
            scale = gram.diagonal(dim1=1, dim2=2).amax(dim=1).clamp_min(1e-30)
            gram = gram + (lam * scale)[:, None, None] * eye
            weights = torch.linalg.solve(gram, torch.ones_like(gram[..., :1]))[..., 0]
            alpha = weights / weights.sum(dim=1, keepdim=True)
            x_new = torch.bmm(alpha[:, None], f_hist)[:, 0].to(z.dtype)
        keep = len(xs) - max(m - 1, 0)
        xs, fs = xs[keep:] + [x_new], fs[keep:] + [_per_sample(f(x_new.reshape(shape)))]
        residual = _relative_residual(fs[-1], xs[-1]).max().item()
        iterations += 1
    return fs[-1].reshape(shape), iterations, residual


_SOLVERS = {"fixed_point": _fixed_point, "anderson": _anderson}
# The options of each solver and backward mode (optgen's registry, tested).
_SOLVER_OPTIONS = {
    "fixed_point": ("max_iter", "tol", "iterations"),
    "anderson": ("m", "max_iter", "tol", "lam"),
}
_BACKWARD_OPTIONS = {"implicit": ("max_iter", "tol"), "phantom": ("steps",), "unroll": ()}
_COUNTS = ("max_iter", "m", "steps", "iterations")


def _check_choice(module: nn.Module, attr: str, table: dict) -> None:
    """`module.solver` or `module.backward`: a known method, known options."""
    owner = f"{type(module).__name__}.{attr}"
    setting = getattr(module, attr)
    name = setting.get("name") if isinstance(setting, dict) else None
    if name not in table:
        raise ValueError(f"{owner}: unknown name {name!r}; choose one of {', '.join(table)}")
    for key, value in setting.items():
        if key == "name":
            continue
        if key not in table[name]:
            known = ", ".join(table[name]) or "none"
            raise ValueError(f"{owner}: {name} has no option {key!r}; its options: {known}")
        if key in _COUNTS:
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
            wanted = "a positive int"
        else:  # tol = 0 runs max_iter iterations
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
            wanted = "a number >= 0"
        if not ok:
            raise ValueError(f"{owner}: option {key} must be {wanted}, got {value!r}")


def _record(
    module: nn.Module, layer: int, phase: str, iterations: int, residual: float, tol: float
) -> None:
    """Record one solve's statistics; warn once or raise if it missed tol."""
    if residual != residual or residual in (float("inf"), float("-inf")):
        raise FloatingPointError(
            f"{type(module).__name__}: the {phase} solve of layer {layer}" " produced NaN or inf"
        )
    converged = residual <= tol
    module.solver_stats.append(
        {
            "layer": layer,
            "phase": phase,
            "iterations": iterations,
            "residual": residual,
            "converged": converged,
        }
    )
    if converged:
        return
    message = (
        f"{type(module).__name__}: the {phase} solve of layer {layer} stopped"
        f" after {iterations} iterations at relative residual {residual:.3g}"
        f" > tol {tol:g}"
    )
    if module.on_failure == "raise":
        raise RuntimeError(message)
    if not module._warned:
        module._warned = True
        warnings.warn(message + " (warned once per module)", RuntimeWarning, stacklevel=3)


def _contraction(f, z: Tensor, iterations: int) -> float:
    """Power-iteration estimate of the spectral radius of df/dz at z (the
    largest over the batch).

    Below 1, the layer map is a local contraction at its solution
    (t * Lip(T) < 1 for the proximal point rule); near or above 1, solves slow
    down or diverge.
    """
    with torch.enable_grad():
        z = z.detach().requires_grad_()
        fz = f(z)
        v = torch.randn(z.shape, generator=torch.Generator().manual_seed(0)).to(z)
        v = v / v.norm()
        radius = 0.0
        for _ in range(iterations):
            (u,) = torch.autograd.grad(fz, z, v, retain_graph=True)
            radius = u.norm().item()
            v = u / max(radius, 1e-30)
    return radius


def _solve(module: nn.Module, f, z0: Tensor, layer: int) -> Tensor:
    """The fixed point z = f(z), differentiable as `module.backward` says."""
    _check_choice(module, "solver", _SOLVER_OPTIONS)
    _check_choice(module, "backward", _BACKWARD_OPTIONS)
    if z0.numel() == 0:  # an empty batch: nothing to solve, and no residual to take
        return f(z0)
    fixed = module.solver.get("iterations")
    if fixed is not None:
        # The exportable path: exactly `fixed` steps, differentiated through,
        # with no data-dependent exit, no .item() and nothing recorded.
        z = z0
        for _ in range(fixed):
            z = f(z)
        return z
    options = dict(module.solver)
    solver = _SOLVERS[options.pop("name")]
    tol = options["tol"]
    mode = module.backward["name"]
    if mode == "unroll" or not torch.is_grad_enabled():
        z, iterations, residual = solver(f, z0, **options)
        _record(module, layer, "forward", iterations, residual, tol)
        if module.contraction_iterations:
            module.solver_stats[-1]["contraction"] = _contraction(
                f, z, module.contraction_iterations
            )
        return z
    with torch.no_grad():
        z, iterations, residual = solver(f, z0, **options)
    _record(module, layer, "forward", iterations, residual, tol)
    if module.contraction_iterations:
        module.solver_stats[-1]["contraction"] = _contraction(f, z, module.contraction_iterations)
    if mode == "phantom":
        for _ in range(module.backward["steps"]):
            z = f(z)
        return z
    # Implicit differentiation: the gradient g of z* solves g = grad + J^T g,
    # J = df/dz at z*. One evaluation of f at a leaf copy of z* serves the
    # adjoint's vector-Jacobian products and the gradients of parameters and
    # inputs. The hook sits on an alias of its output, so that the products
    # (taken from the output itself) do not fire it again.
    z_star = z.detach().requires_grad_()
    f_star = f(z_star)
    z = f_star.view_as(f_star)
    adjoint = dict(module.backward)
    adjoint.pop("name")
    adjoint_tol = adjoint.get("tol", tol)

    def adjoint_solve(grad: Tensor | None) -> Tensor | None:
        if grad is None:  # an undefined output gradient: nothing to solve for
            return None

        def step(g: Tensor) -> Tensor:
            (vjp,) = torch.autograd.grad(f_star, z_star, g, retain_graph=True)
            return vjp + grad

        with torch.enable_grad():
            g, its, res = solver(step, grad, **{**options, **adjoint})
        _record(module, layer, "backward", its, res, adjoint_tol)
        return g.detach()

    if z.requires_grad:
        z.register_hook(adjoint_solve)
    return z
