"""The config: its schema (`schema`) and how a preset and `--set` overrides become one (`loading`)."""

from gan_dist.config.loading import Override, config_from_dict, load_config, override_config, parse_override
from gan_dist.config.schema import (
    AUGMENTATIONS,
    DEFAULT_PRESET,
    EVAL_METRICS,
    MASK_KINDS,
    MAX_SEED,
    MODEL_SECTIONS,
    PRESET_DIR,
    RETUNABLE,
    RUN_NAME,
    SCHEDULED,
    TASK_SECTIONS,
    Config,
    CUTTaskConfig,
    CycleGANTaskConfig,
    DataConfig,
    DCGANConfig,
    EvalConfig,
    GenerationTaskConfig,
    InpaintTaskConfig,
    LogConfig,
    ModelConfig,
    R3GANConfig,
    ResNetSNConfig,
    RunConfig,
    ScheduleConfig,
    TaskConfig,
    TrainConfig,
    TranslatorConfig,
)

__all__ = [
    "AUGMENTATIONS", "DEFAULT_PRESET", "EVAL_METRICS", "MASK_KINDS", "MAX_SEED", "MODEL_SECTIONS",
    "PRESET_DIR", "RETUNABLE", "RUN_NAME", "SCHEDULED", "TASK_SECTIONS", "Config",
    "CUTTaskConfig", "CycleGANTaskConfig", "DataConfig", "DCGANConfig", "EvalConfig", "GenerationTaskConfig",
    "InpaintTaskConfig", "LogConfig", "ModelConfig", "Override", "R3GANConfig", "ResNetSNConfig", "RunConfig",
    "ScheduleConfig", "TaskConfig", "TrainConfig", "TranslatorConfig", "config_from_dict", "load_config",
    "override_config", "parse_override",
]
