"""The Hub: models loaded by name (`models`), artifacts saved, loaded and pushed (`mixin`), the model card (`card`),
dataset repos of landscapes (`tables`, `dataset_card`). Two modules read surfaces and comparisons, so they are
imported by name, not from here: static Spaces of the viewer (`hub.space.publish_space`) and landscapes named by
folder, file or repo id (`hub.sources.load_landscape`)."""

from .card import render_card, reproduce_command, surface_section
from .dataset_card import render_dataset_card
from .mixin import (
    REPO_TYPES,
    FileSource,
    HubMixin,
    check_repo_id,
    check_repo_type,
    clean_folder,
    push_artifacts,
    push_surfaces,
)
from .models import MODEL_PATTERNS, check_device, load_model, resolve_model
from .tables import subset_name

__all__ = [
    "MODEL_PATTERNS",
    "REPO_TYPES",
    "FileSource",
    "HubMixin",
    "check_device",
    "check_repo_id",
    "check_repo_type",
    "clean_folder",
    "load_model",
    "push_artifacts",
    "push_surfaces",
    "render_card",
    "render_dataset_card",
    "reproduce_command",
    "resolve_model",
    "subset_name",
    "surface_section",
]
