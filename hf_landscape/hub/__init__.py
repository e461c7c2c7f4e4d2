"""The Hub: models loaded by name (`models`), artifacts saved, loaded and pushed (`mixin`), model cards (`card`)."""

from .card import render_card, reproduce_command, surface_section
from .mixin import FileSource, HubMixin, check_repo_id, clean_folder, push_artifacts, push_surfaces
from .models import MODEL_PATTERNS, check_device, load_model, resolve_model

__all__ = [
    "MODEL_PATTERNS",
    "FileSource",
    "HubMixin",
    "check_device",
    "check_repo_id",
    "clean_folder",
    "load_model",
    "push_artifacts",
    "push_surfaces",
    "render_card",
    "reproduce_command",
    "resolve_model",
    "surface_section",
]
