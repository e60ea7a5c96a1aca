"""The certificate of a model: its stages' certificates and one verdict for the whole."""

from __future__ import annotations

from dataclasses import dataclass

from .. import ir
from .certificate import Certificate

# The paper's statement on what sits between the stages.
TRANSITIONS_KEEP = (
    "normalization and down- and up-sampling between the stages keep universal approximation "
    "(the paper's extension to staged networks)"
)


@dataclass(frozen=True)
class ModelCertificate:
    name: str
    stages: tuple[tuple[str, Certificate], ...]  # (network, its certificate), one per stage
    universal: bool | None
    reasons: tuple[str, ...]

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": "model",
            "stages": [
                {
                    "stage": i,
                    "network": network,
                    "depth": cert.depth,
                    "start": cert.start,
                    "zero_stable": cert.zero_stable,
                    "consistent": cert.consistent,
                    "universal": cert.universal,
                }
                for i, (network, cert) in enumerate(self.stages)
            ],
            "universal": {"guaranteed": self.universal, "reasons": list(self.reasons)},
        }


def analyze_model(model: ir.Model, stage_certificates: tuple[Certificate, ...]) -> ModelCertificate:
    """Guaranteed when every stage is; otherwise the first stage that decides is named.

    `stage_certificates` holds one certificate per stage, of the stage's network at the
    stage's depth and first layer (`optgen.backend.models.stage_networks`).
    """
    stages = tuple((s.network, c) for s, c in zip(model.stages, stage_certificates))
    failing = [(i, n, c) for i, (n, c) in enumerate(stages) if c.universal is False]
    unknown = [(i, n, c) for i, (n, c) in enumerate(stages) if c.universal is None]
    if failing:
        i, network, cert = failing[0]
        why = next((r for r in cert.universal_reasons if not r.startswith("block ")), None)
        why = why or "; ".join(cert.universal_reasons)
        return ModelCertificate(
            model.name, stages, False, (f"stage {i} ({network}) is not guaranteed: {why}",)
        )
    if unknown:
        i, network, cert = unknown[0]
        why = "; ".join(cert.universal_reasons)
        return ModelCertificate(
            model.name, stages, None, (f"stage {i} ({network}) is unknown: {why}",)
        )
    reasons = (f"every stage is guaranteed ({len(stages)} stages)", TRANSITIONS_KEEP)
    return ModelCertificate(model.name, stages, True, reasons)
