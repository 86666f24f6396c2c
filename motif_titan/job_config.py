"""motif_titan's extension of TorchTitan's JobConfig (TOML: ``[job] custom_config_module = "motif_titan.job_config"``).

TorchTitan merges the dataclass named ``JobConfig`` below into its own config, recursively: a field here whose
type is a new dataclass becomes a new TOML section, and a field named like an existing section (``optimizer``,
``training``, ...) whose dataclass subclasses TorchTitan's adds fields to that section. Each motif_titan part
owns its section's dataclass, validated in ``__post_init__`` with errors that name the field; this module only
assembles them. A motif2 run is configured by ``[model] name = "motif2"`` and ``flavor``; the one model field
added (``gda_value_path``) overrides a flavor's choice of GDA attention calls. TorchTitan builds the merged
dataclass from the fields alone, so each part validates its fields in its builder, before anything is built
(e.g. ``motif_titan.optim.builder.validate_muon_config``).
"""

from dataclasses import dataclass, field

from motif_titan.data.curriculum import CurriculumConfig
from motif_titan.infra.nonfinite_guard import GuardConfig
from motif_titan.model.args import Motif2ModelFields
from motif_titan.optim.builder import MuonOptimizerFields


@dataclass
class JobConfig:
    """Sections motif_titan adds to TorchTitan's JobConfig."""

    optimizer: MuonOptimizerFields = field(default_factory=MuonOptimizerFields)
    """Muon knobs added to ``[optimizer]`` (see motif_titan.optim.builder)."""
    model: Motif2ModelFields = field(default_factory=Motif2ModelFields)
    """``gda_value_path`` added to ``[model]`` (see motif_titan.model.args)."""
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    """``[curriculum]``: data domains, mixture schedule, ramps, SFT (see motif_titan.data.curriculum)."""
    guard: GuardConfig = field(default_factory=GuardConfig)
    """``[guard]``: non-finite loss or grad norm: stop the run or skip the step (motif_titan.infra.nonfinite_guard)."""
