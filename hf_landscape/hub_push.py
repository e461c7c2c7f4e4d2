"""Publishing under its older name: `push_surfaces`, `render_card`, `check_repo_id` and `clean_folder` live in
`hf_landscape.hub`."""

from .hub.card import render_card, reproduce_command, surface_section
from .hub.mixin import check_repo_id, clean_folder, push_surfaces

__all__ = ["check_repo_id", "clean_folder", "push_surfaces", "render_card", "reproduce_command", "surface_section"]
