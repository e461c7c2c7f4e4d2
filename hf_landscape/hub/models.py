"""Models: loaded by Hub name or local path, with the resolved revision recorded for provenance, and checked
before they are probed (a transformers or peft model, with real weights: `check_model`, `check_materialized`).

A checkpoint is never given a fresh head silently: `load_model` refuses one that the requested class would load with
newly initialized weights (a classifier loaded as a causal LM, a base model loaded as a classifier), naming the
objective that fits the head it has (`check_head` reads the same from the config alone, before any weight is read).

Weights load from safetensors only, and `trust_remote_code` stays off unless the caller turns it on.
A Hub name is resolved with `huggingface_hub.snapshot_download`, whose snapshot folder is named by
the commit sha, so the surface records exactly which commit was probed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from pathlib import Path
from typing import Any

from ..errors import ConfigError, HubModelError, ModelError, hidden_token, raise_detached
from .gguf import parsed_once

logger = logging.getLogger(__name__)

_SHA = re.compile(r"^[0-9a-f]{40}$")
# What a model folder needs for loading: configs, safetensors weights, tokenizer files. Never .bin or .pt files.
MODEL_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja"]


def resolve_model(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    allow_patterns: list[str] | None = None,
) -> tuple[str, dict[str, Any]]:
    """Return a local folder for `name_or_path` and its provenance (`name_or_path`, `revision`, `commit_sha`; `local`
    for a local folder, which is named by its repo id when it is a Hugging Face cache folder and else by its folder
    name, never by its path: `provenance.public_model`).

    `allow_patterns` narrows what is fetched from the Hub (default `MODEL_PATTERNS`: configs, safetensors weights and
    tokenizer files; without `"*.safetensors"`, a light fetch of the config and tokenizer only).

    Raises:
        HubModelError: the name is neither a local folder nor a Hub repo that can be reached (a `HubError` and a
            `ModelError`).
    """
    from ..provenance import public_model

    path = Path(name_or_path)
    if path.is_dir():
        local = {"name_or_path": str(name_or_path), "revision": revision, "commit_sha": None, "local": True}
        return str(path), public_model(local)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    with hidden_token(token):
        try:
            folder = snapshot_download(
                str(name_or_path),
                revision=revision,
                allow_patterns=MODEL_PATTERNS if allow_patterns is None else allow_patterns,
                token=token,
                cache_dir=None if cache_dir is None else str(cache_dir),
            )
        except RevisionNotFoundError:
            raise_detached(
                HubModelError(
                    f"`revision` {revision!r} does not exist in Hub repo {str(name_or_path)!r}; pass a branch, tag "
                    "or commit sha."
                )
            )
        except RepositoryNotFoundError:
            raise_detached(
                HubModelError(
                    f"`name_or_path` {str(name_or_path)!r} is neither a local folder nor a Hub repo you can read; "
                    "check the name, or pass `token=` for a private or gated repo."
                )
            )
        except (LocalEntryNotFoundError, HfHubHTTPError, ValueError, OSError) as err:
            raise_detached(
                HubModelError(
                    f"Could not fetch {str(name_or_path)!r} from the Hub ({type(err).__name__}: {err}); check the "
                    "connection (and HF_HUB_OFFLINE), or pass a local folder."
                )
            )
    sha = Path(folder).name if _SHA.match(Path(folder).name) else None
    return folder, public_model({"name_or_path": str(name_or_path), "revision": revision, "commit_sha": sha})


def load_model(
    name_or_path: str | os.PathLike,
    *,
    model_class: Any = None,
    revision: str | None = None,
    dtype: Any = None,
    device: Any = None,
    trust_remote_code: bool = False,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    **model_kwargs: Any,
) -> tuple[Any, dict[str, Any]]:
    """Load a `PreTrainedModel` from safetensors and return it with its provenance.

    Args:
        name_or_path: a Hub repo id or a local folder.
        model_class: a transformers class or auto class; `AutoModelForCausalLM` by default.
        revision: branch, tag or commit sha on the Hub.
        dtype: e.g. `torch.bfloat16` or `"auto"`.
        device: where to put the model after loading (or pass `device_map=` in `model_kwargs`).
        trust_remote_code: allow code from the repo to run; off unless you turn it on.
        model_kwargs: passed to `from_pretrained`.

    Raises:
        ModelError: the checkpoint lacks weights the class needs (they would be newly initialized: a fresh head whose
            loss means nothing); the message names the objective that fits the head it has.
    """
    if device is not None:
        check_device(device, "device")
    if model_class is None:
        from transformers import AutoModelForCausalLM

        model_class = AutoModelForCausalLM
    folder, provenance = resolve_model(name_or_path, revision=revision, token=token, cache_dir=cache_dir)
    if "gguf_file" not in model_kwargs:
        model_kwargs.setdefault("use_safetensors", True)
    # peft's auto classes load the base model themselves and report no loading info
    report = not str(getattr(model_class, "__module__", "")).startswith("peft")
    if report:
        model_kwargs["output_loading_info"] = True
    gguf = parsed_once() if model_kwargs.get("gguf_file") else contextlib.nullcontext()
    with hidden_token(token), gguf:  # a GGUF file's metadata is parsed once, for the config and the weights
        try:
            loaded = model_class.from_pretrained(
                folder, dtype=dtype, trust_remote_code=trust_remote_code, **model_kwargs
            )
        except (OSError, ValueError) as err:
            raise_detached(
                ModelError(
                    f"Could not load {str(name_or_path)!r} with {getattr(model_class, '__name__', model_class)}: {err}"
                )
            )
    model, info = loaded if report else (loaded, {})
    if report:
        check_head(model.config, type(model).__name__, f"`name_or_path` {str(public_name_of(name_or_path))!r}")
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        raise ModelError(new_weights_message(name_or_path, model, model_class, missing))
    if device is not None:
        model.to(device)
    provenance["class"] = type(model).__name__
    return model, provenance


def check_device(device: Any, argument: str) -> Any:
    """`device` as a `torch.device` that exists on this machine, or a `ConfigError` naming `argument` and the fix
    (an unknown name, CUDA or MPS where there is none, a GPU index beyond the count, the meta device)."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"`{argument}` {device!r} is not a device; pass e.g. 'cpu', 'cuda' or 'cuda:1'.") from None
    if parsed.type == "meta":
        raise ConfigError(
            f"`{argument}` {device!r} holds shapes without values, so no loss can be computed; pass 'cpu' or 'cuda'."
        )
    if parsed.type == "cpu":
        return parsed
    backend = getattr(torch, parsed.type, None)
    available = bool(getattr(backend, "is_available", lambda: False)())
    if not available:
        raise ConfigError(
            f"`{argument}` {device!r} is not available on this machine (torch {torch.__version__} sees no "
            f"{parsed.type} device); pass 'cpu', or install a torch build for it."
        )
    count = getattr(backend, "device_count", lambda: 1)()
    if parsed.index is not None and parsed.index >= count:
        raise ConfigError(
            f"`{argument}` {device!r} names device {parsed.index}, but this machine has {count} {parsed.type} "
            f"device(s) (0 to {count - 1})."
        )
    return parsed


def check_model(model: Any, argument: str = "model") -> None:
    """Refuse, before any work, what a probe cannot take: anything but a transformers `PreTrainedModel` or a peft
    `PeftModel` (its weights are checked by `check_materialized`)."""
    from transformers import PreTrainedModel

    if not (isinstance(model, PreTrainedModel) or _is_peft_model(model)):
        raise ModelError(
            f"`{argument}` must be a transformers `PreTrainedModel` or a peft `PeftModel`, got {type(model).__name__}; "
            "load it with `AutoModelForCausalLM.from_pretrained(...)` or use `LandscapeProbe.from_pretrained(name)`."
        )


def _is_peft_model(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def check_path_models(others: list[Any]) -> None:
    """The models of an interpolation path: at least one, each a `PreTrainedModel` with real weights."""
    from transformers import PreTrainedModel

    if not others:
        raise ModelError("`other_model` is an empty list; pass a model or a list of models to interpolate to.")
    for i, other in enumerate(others):
        where = "other_model" if len(others) == 1 else f"other_model[{i}]"
        if not isinstance(other, PreTrainedModel):
            raise ModelError(f"`{where}` must be a transformers `PreTrainedModel`, got {type(other).__name__}.")
        check_materialized(other, where)


def check_materialized(model: Any, argument: str) -> None:
    """Refuse a model with weights on the meta device (shapes without values, e.g. built under
    `init_empty_weights`), which no loss can be computed on. Weights that accelerate offloaded (`device_map` with
    CPU or disk offload) are meta too, but its hooks load them at each forward: those are allowed here."""
    hooked = [name for name, module in model.named_modules() if hasattr(module, "_hf_hook")]

    def offloaded(name: str) -> bool:
        return any(h == "" or name.startswith(f"{h}.") for h in hooked)

    tensors = [*model.named_parameters(), *model.named_buffers()]
    meta = [n for n, t in tensors if t.device.type == "meta" and not offloaded(n)]
    if meta:
        raise ModelError(
            f"`{argument}` has {len(meta)} weight(s) on the meta device (shapes without values), e.g. {meta[0]!r}; "
            "load its weights (e.g. `from_pretrained(...)`, not a model built under `init_empty_weights`)."
        )


# --- heads -------------------------------------------------------------------------------------------------------


def objectives_for(auto_class: str) -> list[str]:
    """The objective classes (every `Objective` subclass imported so far) that evaluate models of `auto_class`."""
    from ..objectives.base import Objective

    found: list[str] = []
    stack = list(Objective.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if getattr(cls, "auto_model_class", None) == auto_class and cls.__name__ not in found:
            found.append(cls.__name__)
    return sorted(found)


def head_class(config: Any, auto_class: str) -> str | None:
    """The class name `auto_class` (a transformers auto class name) loads for `config`, or None if it has none."""
    import transformers

    auto = getattr(transformers, auto_class, None)
    try:
        return str(auto._model_mapping[type(config)].__name__) if auto is not None else None
    except (KeyError, AttributeError, ValueError):
        return None


def fitting_auto_classes(config: Any, candidates: list[str]) -> list[str]:
    """Those of the auto classes `candidates` that load the architecture `config` was saved from (its
    `architectures`) as that same class, i.e. with the head it has."""
    saved = list(getattr(config, "architectures", None) or [])
    return [auto for auto in candidates if head_class(config, auto) in saved]


def check_head(config: Any, wanted: str | None, what: str, *, fits: dict[str, str] | None = None) -> None:
    """Refuse, from its config alone, a checkpoint that would be loaded as the class `wanted` with a fresh head: one
    saved as a base model (`BertModel`: no task head) or with the head of another objective (a
    `...ForSequenceClassification` for a causal LM). `fits` maps auto classes to how the caller names their objectives
    (`{"AutoModelForCausalLM": "`--objective causal-lm`"}`), by default the objective classes; `what` names the
    checkpoint in the message ("`name_or_path` 'tiny-bert'"). A checkpoint of another
    architecture, or whose config does not say, is left to `load_model`, which checks the weights it loads.

    Raises:
        ModelError: naming the checkpoint's head and the objective that fits it.
    """
    saved = list(getattr(config, "architectures", None) or [])
    if not saved or wanted is None or wanted in saved:
        return
    if fits is None:
        fits = {a: " or ".join(f"`{o}`" for o in objectives_for(a)) for a in _AUTO_CLASSES}
    others = [a for a in fitting_auto_classes(config, list(fits)) if head_class(config, a) != wanted and fits.get(a)]
    if others:
        fix = f"Use the objective for the head it has: {' or '.join(fits[a] for a in others)}."
    elif head_class(config, "AutoModel") in saved:
        fix = f"It has no task head; pass a checkpoint fine-tuned with the head this objective reads ({wanted})."
    else:
        return
    raise ModelError(
        f"{what} holds a {', '.join(saved)} checkpoint, which would be loaded as {wanted} with a newly initialized "
        f"head: its loss would mean nothing. {fix}"
    )


# the auto classes whose objectives a default message names
_AUTO_CLASSES = ["AutoModelForCausalLM", "AutoModelForSequenceClassification"]


def new_weights_message(name: Any, model: Any, model_class: Any, missing: list[str]) -> str:
    """Why a checkpoint whose loading left `missing` weights newly initialized is refused, and what fits it."""
    config = getattr(model, "config", None)
    saved = list(getattr(config, "architectures", None) or [])
    fitting = [a for a in fitting_auto_classes(config, _AUTO_CLASSES) if objectives_for(a)] if config else []
    shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
    loader = getattr(model_class, "__name__", str(model_class))
    holds = f" holds a {', '.join(saved)} checkpoint; it" if saved else ""
    if fitting:
        fix = "Use an objective for the head it has: " + "; ".join(
            f"{' or '.join(f'`{o}`' for o in objectives_for(a))} ({a})" for a in fitting
        )
    else:
        fix = "Pass a checkpoint that holds these weights (a model fine-tuned for this objective)"
    return (
        f"`name_or_path` {str(public_name_of(name))!r}{holds} lacks {len(missing)} weight(s) that {loader} "
        f"({type(model).__name__}) needs ({shown}); transformers would initialize them at random, and the loss of a "
        f"fresh head means nothing. {fix}."
    )


def public_name_of(name: Any) -> Any:
    from ..provenance import public_name

    return public_name(name)
