"""Differentiate, train and sample: tgraph grad, tgraph train, tgraph generate."""

from __future__ import annotations

from pathlib import Path

import click

from tgraph.cli.common import (
    backend_option,
    graph_source,
    parse_pairs,
    plugin_option,
    status,
    verbosity_options,
    weights_option,
)
from tgraph.errors import TGraphError
from tgraph.train.tasks import TASKS


@click.command("grad")
@graph_source
@click.option("--wrt", multiple=True, metavar="NAME",
              help="Differentiate with respect to this value (repeatable; default: every "
                   "float parameter the loss depends on).")
@click.option("--of", default="loss", show_default=True,
              help="The scalar output to differentiate.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True,
              help="Forward+backward graph file (.json).")
def grad_cmd(graph, wrt, of, output):
    """Turn a graph into a forward+backward graph whose outputs grad/<param> are the
    gradients of its loss.

    Example: tgraph grad gpt --preset tiny --loss -o fwdbwd.json
    """
    from tgraph.autodiff import grad
    from tgraph.io import save_graph

    if of not in graph.outputs:
        raise TGraphError(f"graph {graph.name!r} has no output {of!r}: build the model with "
                          "--loss, or name the scalar to differentiate with --of")
    fb = grad(graph, of, wrt=list(wrt) or None)
    save_graph(fb, output)
    n_grads = len(fb.meta["grad"]["wrt"])
    click.echo(f"wrote {output}: {len(graph.nodes)} forward + "
               f"{len(fb.nodes) - len(graph.nodes)} backward nodes, {n_grads} gradients")


@click.command("train")
@click.argument("model")
@click.option("--task", type=click.Choice(TASKS), required=True,
              help="reverse/copy/sort digit sequences (transformer) or text (gpt).")
@click.option("--data", type=click.Path(dir_okay=False),
              help="Text file for --task text, e.g. examples/data/corpus.txt.")
@click.option("--preset", help="Model preset to start from.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Model config override (repeatable); the task sets vocab and max_len.")
@click.option("--steps", default=300, show_default=True)
@click.option("--batch", default=64, show_default=True, help="Sequences per step.")
@click.option("--seq-len", type=int, metavar="N",
              help="Context length for text (default 64), digits per sequence for "
                   "reverse/copy/sort (default 8).")
@click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), default="adamw",
              show_default=True)
@click.option("--lr", default=3e-3, show_default=True, help="Peak learning rate.")
@click.option("--warmup", default=50, show_default=True, help="Warm-up steps, then cosine.")
@click.option("--weight-decay", default=0.0, show_default=True)
@click.option("--clip", default=1.0, show_default=True, help="Gradient norm clip (0: off).")
@click.option("--checkpoint-every", default=0, show_default=True,
              help="Also save the weights every N steps.")
@click.option("--seed", default=0, show_default=True)
@backend_option
@verbosity_options
@plugin_option
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True,
              help="Weights .npz; the forward graph goes beside it as .json.")
def train_cmd(model, task, data, preset, sets, steps, batch, seq_len, optimizer, lr,
              warmup, weight_decay, clip, checkpoint_every, seed, backend, output):
    """Train a model on a task and save its weights (and graph, for generate).

    Example: tgraph train transformer --task reverse --preset tiny --steps 300 -o rev.npz
    """
    import numpy as np

    from tgraph.io import save_graph
    from tgraph.models import build_model
    from tgraph.params import init_params
    from tgraph.train import OPTIMIZERS, Trainer, warmup_cosine
    from tgraph.train.tasks import make_task

    job = make_task(task, data, seq_len)
    if model != job.model:
        raise TGraphError(f"task {task} trains the {job.model} model, not {model}")
    overrides = {**parse_pairs(sets, "--set"), **job.model_overrides()}
    graph = build_model(model, preset, loss=True, **overrides)
    extra = {"weight_decay": weight_decay}
    trainer = Trainer(graph, init_params(graph, seed), OPTIMIZERS[optimizer](lr, **extra),
                      backend, clip)
    rng = np.random.default_rng(seed)
    losses = trainer.fit(lambda step: job.batch(rng, batch), steps,
                         warmup_cosine(lr, steps, min(warmup, steps // 2)), output,
                         checkpoint_every)
    forward = build_model(model, preset, **overrides)
    if task == "text":
        forward.meta["chars"] = job.vocab_chars.chars
    graph_path = Path(output).with_suffix(".json")
    save_graph(forward, graph_path)
    status(f"wrote {output} and {graph_path}")
    final = float(np.mean(losses[-20:]))
    if task == "text":
        click.echo(f"loss {final:.4f} nats/char (unigram entropy of the corpus "
                   f"{job.unigram_entropy():.4f})")
    else:
        from tgraph.execute import Executable

        acc = job.accuracy(Executable(forward, backend), trainer.host_params(),
                           np.random.default_rng(seed + 1))
        click.echo(f"loss {final:.4f}, exact-sequence accuracy on held-out sequences "
                   f"{acc:.1%}")


@click.command("generate")
@graph_source
@weights_option
@click.option("--prompt", default="", help="Text to continue.")
@click.option("--length", default=200, show_default=True, help="Characters to sample.")
@click.option("--temperature", default=0.8, show_default=True, help="0: greedy.")
@click.option("--top-k", default=0, show_default=True, help="Sample among the k likeliest.")
@click.option("--seed", default=0, show_default=True)
@backend_option
def generate_cmd(graph, weights, prompt, length, temperature, top_k, seed, backend):
    """Sample text from a GPT trained with tgraph train --task text.

    Example: tgraph generate text.json --weights text.npz --prompt "The " --length 300
    """
    import numpy as np

    from tgraph.execute import Executable
    from tgraph.io import load_weights
    from tgraph.train.sample import generate
    from tgraph.train.tasks import CharVocab

    chars = graph.meta.get("chars")
    if not chars:
        raise TGraphError(f"graph {graph.name!r} has no character vocabulary: use the .json "
                          "that tgraph train --task text wrote beside its weights")
    if not weights:
        raise TGraphError("give the trained weights with --weights W.npz")
    vocab = CharVocab(chars)
    start = vocab.encode(prompt) or [0]  # no prompt: start from the first character
    ids = generate(Executable(graph, backend), load_weights(weights, graph), start, length,
                   graph.meta["config"]["max_len"], temperature, top_k,
                   np.random.default_rng(seed))
    click.echo(vocab.decode(ids if prompt else ids[1:]))
