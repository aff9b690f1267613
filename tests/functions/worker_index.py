"""Index function_app.py the way the Functions Python worker does, without the host (run under Python 3.13).

`FunctionApp.get_functions()` misses an `arg_name` that is not a parameter, an output not typed
`func.Out`, a wrong trigger annotation and two `FunctionApp` objects; the worker's own indexer catches
them. It needs the host's gRPC `protos` module, stubbed here with plain holders (local-stack.md).

Usage: python worker_index.py APP_DIR   -> prints JSON {"functions": [...]} or exits 1 with the error.
"""
from __future__ import annotations

import json
import sys
import types


class _Holder:
    def __init__(self, *args: object, **kwargs: object) -> None:
        self.args = args
        self.__dict__.update(kwargs)


class _BindingInfo(_Holder):
    in_, out, inout = 0, 1, 2
    undefined, string, binary, stream = 0, 1, 2, 3


def _stub_protos() -> types.SimpleNamespace:
    return types.SimpleNamespace(BindingInfo=_BindingInfo, RpcFunctionMetadata=_Holder, ParameterBinding=_Holder,
                                 RpcRetryOptions=_Holder)


def main(app_dir: str) -> int:
    sys.path.insert(0, app_dir)
    from azure_functions_runtime import handle_event
    from azure_functions_runtime.bindings import meta

    handle_event.protos = _stub_protos()
    meta.load_binding_registry()
    try:
        results = handle_event.index_functions(f"{app_dir}/function_app.py", app_dir)
    except Exception as exc:  # the worker reports any indexing error as a failed start
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 1
    names = sorted(getattr(r, "name", "") for r in results or [])
    print(json.dumps({"functions": names}))
    return 0 if names else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
