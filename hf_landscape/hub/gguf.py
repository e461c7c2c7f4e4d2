"""GGUF files parsed once per block.

transformers parses a GGUF file anew for each thing it reads from it (the config, the tensors, the tokenizer's
config and the tokenizer), and each parse reads every metadata field: for SmolLM2-135M a 49,152-token vocabulary and
its merges, about 3 s on 2 CPU cores each time. It also builds gguf's tensor name map once per module of the model
(397 times for SmolLM2, 10 ms each). Inside `parsed_once()` each file is parsed once and each name map built once;
a parse is a read-only memory map of the file and a name map a lookup table, so sharing them changes nothing that is
read. Outside the block gguf is as it was.

    with parsed_once():
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def parsed_once() -> Iterator[dict[Any, Any]]:
    """Share one parse per GGUF file (keyed by its real path, size and modification time) and one tensor name map
    per architecture and depth for the block; yields the parses made, by key. Without the `gguf` package, or with
    one that lacks `GGUFReader` or `get_tensor_name_map`, the block runs as it would without it."""
    readers: dict[Any, Any] = {}
    try:
        import gguf as module
    except ImportError:
        yield readers
        return
    gguf: Any = module  # its attributes are replaced for the block
    reader_class = getattr(gguf, "GGUFReader", None)
    name_map = getattr(gguf, "get_tensor_name_map", None)
    if reader_class is None or name_map is None:
        yield readers
        return

    def shared_reader(path: Any, mode: str = "r") -> Any:
        stat = os.stat(path)
        key = (os.path.realpath(path), mode, stat.st_size, stat.st_mtime_ns)
        if key not in readers:
            readers[key] = reader_class(path, mode)
        else:
            logger.debug("GGUF %s: the block's parse reused", key[0])
        return readers[key]

    gguf.GGUFReader = shared_reader
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(name_map)
    try:
        yield readers
    finally:
        gguf.GGUFReader = reader_class
        gguf.get_tensor_name_map = name_map
