"""Jinja templates of the model cards pushed with surfaces (installed as `hf_landscape.model_cards`)."""
