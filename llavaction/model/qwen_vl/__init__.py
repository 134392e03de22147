"""The Qwen2.5-VL and Qwen3-VL families' shared code: transformers' own models with LLaVAction's action supervision,
their frame rule and prompt format, and the spec both register (llavaction.model.qwen2_5_vl, .qwen3_vl)."""
