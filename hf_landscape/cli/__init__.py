"""The `hf-landscape` command line: one module per command, each a thin layer over the library."""
