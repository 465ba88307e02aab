"""`python tests/serve_llama_cpp.py ARGS…`: llama-cpp-python's server with loom's AMX guard.

The server builds its model parameters with `llama_model_default_params()` and has no option to
turn weight repacking off, so on an AMX CPU it would crash on the first request (see
loom.engine.cpu). This launcher applies the same decision as loom's own engine before the server
starts, by wrapping that one function; everything else is `python -m llama_cpp.server ARGS…`.
"""

from __future__ import annotations

import runpy
import sys
from typing import Any

import llama_cpp.llama_cpp as bindings

from loom.engine.runtime import weight_repacking

if not weight_repacking().allowed:
    _default_params = bindings.llama_model_default_params

    def _params_without_repacking() -> Any:
        params = _default_params()
        params.use_extra_bufts = False
        return params

    bindings.llama_model_default_params = _params_without_repacking

sys.argv = ["llama_cpp.server", *sys.argv[1:]]
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
