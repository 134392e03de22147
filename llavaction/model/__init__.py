"""Video LLM families as pure torch.nn + transformers, usable without the rest of the package: one spec a family
(llavaction.model.family), the built-in ones registered by llavaction.model.families, the architecture a run
resolves and the model built from it (llavaction.model.architecture)."""
