"""Writing text with a saved language model (`equilibria sample`)."""

from __future__ import annotations

from ..config import ConfigError
from ..tasks import Sample, SampleRequest
from ..training import distributed
from .generate import generate
from .model import context_length
from .restore import load_language_model


def sample_run(request: SampleRequest) -> Sample:
    """`request.length` characters after the prompt (default: a newline, if the text has one),
    from the model saved at `request.path`."""
    config, vocab, model = load_language_model(request.path, request.device, request.checkpoint)
    prompt = request.prompt
    if prompt is None:
        prompt = "\n" if "\n" in vocab.chars else vocab.chars[0]
    if not prompt:
        raise ConfigError("--prompt must hold at least one character")
    runtime = distributed.start(config.run.device)
    model.to(runtime.device)
    result = generate(
        model,
        vocab,
        prompt,
        request.length,
        context=context_length(config),
        temperature=request.temperature,
        top_k=request.top_k,
        seed=request.seed,
        warm_start=request.warm_start,
    )
    return Sample(prompt, result.text, result.mean_nfe)
