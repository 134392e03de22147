"""The vLLM engine's worker process (llavaction.evaluation.engines starts it): run by the Python of an environment
that has vLLM, often its own (vLLM pins its own transformers), it loads one model folder and answers the engine's
requests over a local authenticated connection. It imports nothing of llavaction, so it runs in that environment.

Messages (dicts of plain values and numpy arrays): the engine sends the engine settings first; then
{"op": "generate", "requests": [{"prompt_token_ids", "frames", "metadata", "seed"?}], "sampling": {...}} answered by
{"outputs": [{"prompt_token_ids", "samples": [{"token_ids", "first_logprobs"}]}]}, {"op": "load_weights", "path":
a safetensors file} answered by {"loaded": count}, and {"op": "close"}. A failure is answered {"error": "..."}.
"""

from __future__ import annotations

import sys
from multiprocessing.connection import Client


def load(settings: dict):
    from vllm import LLM

    return LLM(
        model=settings["model"],
        dtype=settings["dtype"],
        tensor_parallel_size=settings["tensor_parallel"],
        max_model_len=settings["max_model_len"],
        gpu_memory_utilization=settings["gpu_memory_utilization"],
        enforce_eager=settings["enforce_eager"],
        seed=settings["seed"],
        max_logprobs=settings["logprobs"],
        limit_mm_per_prompt={"video": 1, "image": 0},
    )


def generate(llm, message: dict) -> dict:
    from vllm import SamplingParams

    prompts = [
        {
            "prompt_token_ids": request["prompt_token_ids"],
            "multi_modal_data": {"video": [(request["frames"], request["metadata"])]},
        }
        for request in message["requests"]
    ]
    # a request's own seed (RL rollouts: drawn from the training step's generator) makes its sample reproducible
    sampling = [SamplingParams(**message["sampling"], seed=request.get("seed")) for request in message["requests"]]
    outputs = llm.generate(prompts, sampling, use_tqdm=False)
    return {
        "outputs": [
            {
                "prompt_token_ids": list(output.prompt_token_ids),
                "samples": [
                    {
                        "token_ids": list(sample.token_ids),
                        "first_logprobs": {
                            int(token): float(value.logprob) for token, value in (sample.logprobs or [{}])[0].items()
                        },
                    }
                    for sample in output.outputs
                ],
            }
            for output in outputs
        ]
    }


def load_weights(llm, message: dict) -> dict:
    """New weights (a safetensors file in transformers' names) into the running model, as RL rollouts need after each
    update: vLLM's in-place reload (it repacks them as at load), then the caches the old weights filled (the encoder's
    outputs and the prefix KV blocks) emptied."""
    path = message["path"]

    def apply(worker) -> int:
        from safetensors.torch import load_file

        weights = load_file(path)
        worker.model_runner.reload_weights(weights_iterator=iter(weights.items()))
        return len(weights)

    loaded = llm.collective_rpc(apply)[0]
    llm.llm_engine.reset_encoder_cache()  # the scheduler's record of the outputs too, or it skips encoding
    llm.reset_prefix_cache()
    return {"loaded": loaded}


def main() -> int:
    host, port = sys.argv[1].rsplit(":", 1)
    key = bytes.fromhex(sys.stdin.readline().strip())
    connection = Client((host, int(port)), authkey=key)
    try:
        llm = load(connection.recv())
    except Exception as err:  # reported to the engine, which names the model folder
        connection.send({"error": f"{type(err).__name__}: {err}"})
        return 1
    import vllm

    connection.send({"ready": vllm.__version__})
    operations = {"generate": generate, "load_weights": load_weights}
    while True:
        message = connection.recv()
        if message["op"] == "close":
            return 0
        try:
            connection.send(operations[message["op"]](llm, message))
        except Exception as err:
            connection.send({"error": f"{type(err).__name__}: {err}"})


if __name__ == "__main__":
    raise SystemExit(main())
