"""scoresde: continuous-time score-based diffusion, checked against closed-form truth."""

from .comparison import PROBLEMS, Problem, checkpoint_problem, compare, mixture_problem
from .compile import COMPILE_MODES, CUDAGraphScore
from .diffusers_bridge import DiffusersScore, from_diffusers
from .elbo import (
    ELBOResult,
    VLBResult,
    continuous_elbo,
    ddpm_posterior,
    ddpm_vlb,
    normal_kl,
)
from .flow_matching import flow_matching_loss
from .guidance import (
    cfg_score_fn,
    classifier_free_guidance,
    classifier_guidance,
    classifier_log_prob,
    constant_scale,
    cosine_scale,
    guidance_rescale,
    interval_scale,
    linear_scale,
    multi_condition_guidance,
    multi_condition_score_fn,
    negative_guidance,
    negative_score_fn,
)
from .inpainting import INPAINT_METHODS, InpaintResult, inpaint
from .likelihood import LikelihoodResult, bits_per_dim, dequantize, log_likelihood
from .losses import ddpm_loss, dsm_loss
from .model import ScoreModel
from .nets.classifier import NoisyClassifier
from .noise import NOISES
from .oracle import (
    ClassConditionalMixture,
    GaussianMixture,
    MixtureConditional,
    exact_class_score,
    exact_classifier,
    exact_log_prob,
    exact_score,
    exact_velocity,
    gaussian_flow_map,
)
from .paths import GaussianPath, RectifiedFlow
from .reflow import reflow_pairs, straightness
from .sampling import (
    SOLVERS,
    TIME_GRIDS,
    NonFiniteError,
    SampleResult,
    make_solver,
    make_time_grid,
    sample,
    sample_sharded,
)
from .sde import (
    SDE,
    VESDE,
    VPSDE,
    CosineSchedule,
    LinearSchedule,
    ReverseSDE,
    ScheduleCoeffs,
    SubVPSDE,
)
from .sde_names import SDE_CLASSES, sde_from_config, sde_from_name
from .solvers.torchsde import to_torchsde
from .training import train_classifier

__version__ = "0.1.0"

__all__ = [
    "COMPILE_MODES",
    "CUDAGraphScore",
    "DiffusersScore",
    "from_diffusers",
    "SDE",
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "GaussianPath",
    "RectifiedFlow",
    "LinearSchedule",
    "CosineSchedule",
    "ReverseSDE",
    "ScheduleCoeffs",
    "SDE_CLASSES",
    "sde_from_name",
    "sde_from_config",
    "GaussianMixture",
    "exact_score",
    "exact_log_prob",
    "exact_velocity",
    "gaussian_flow_map",
    "to_torchsde",
    "sample",
    "sample_sharded",
    "SampleResult",
    "SOLVERS",
    "TIME_GRIDS",
    "NOISES",
    "NonFiniteError",
    "make_solver",
    "make_time_grid",
    "log_likelihood",
    "LikelihoodResult",
    "bits_per_dim",
    "dequantize",
    "normal_kl",
    "ddpm_posterior",
    "ddpm_vlb",
    "VLBResult",
    "continuous_elbo",
    "ELBOResult",
    "ScoreModel",
    "dsm_loss",
    "ddpm_loss",
    "flow_matching_loss",
    "reflow_pairs",
    "straightness",
    "ClassConditionalMixture",
    "MixtureConditional",
    "exact_class_score",
    "exact_classifier",
    "classifier_free_guidance",
    "cfg_score_fn",
    "classifier_guidance",
    "NoisyClassifier",
    "train_classifier",
    "classifier_log_prob",
    "negative_guidance",
    "multi_condition_guidance",
    "negative_score_fn",
    "multi_condition_score_fn",
    "guidance_rescale",
    "constant_scale",
    "linear_scale",
    "cosine_scale",
    "interval_scale",
    "inpaint",
    "InpaintResult",
    "INPAINT_METHODS",
    "compare",
    "Problem",
    "checkpoint_problem",
    "mixture_problem",
    "PROBLEMS",
]
