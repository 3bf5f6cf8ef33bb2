"""Differentiate, train and sample: tgraph grad, tgraph train, tgraph generate."""

from __future__ import annotations

from pathlib import Path

import click

from tgraph.cli.common import (
    Finite,
    backend_option,
    graph_source,
    level_option,
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
    status(f"wrote {output}: {len(graph.nodes)} forward + "
               f"{len(fb.nodes) - len(graph.nodes)} backward nodes, {n_grads} gradients")


@click.command("train")
@click.argument("model", metavar="MODEL|GRAPH")
@click.option("--task", type=click.Choice(TASKS),
              help="reverse/copy/sort digit sequences (src_tokens, tgt_tokens: transformer) "
                   "or text (tokens: gpt); default text when --data is given.")
@click.option("--data", type=click.Path(dir_okay=False),
              help="Text file for --task text, e.g. examples/data/corpus.txt.")
@click.option("--preset", help="Model preset to start from.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Model config override (repeatable); the task sets vocab and max_len.")
@click.option("--steps", default=300, show_default=True, type=click.IntRange(1, 10**9))
@click.option("--batch", default=64, show_default=True, type=click.IntRange(1, 1 << 20),
              help="Sequences per step.")
@click.option("--seq-len", type=click.IntRange(1, 1 << 20), metavar="N",
              help="Context length for text (default 64, at most the graph's), digits per "
                   "sequence for reverse/copy/sort (default 8).")
@click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), default="adamw",
              show_default=True)
@click.option("--lr", default=3e-3, show_default=True, type=Finite(0, 1e3, min_open=True),
              help="Peak learning rate.")
@click.option("--warmup", default=50, show_default=True, type=click.IntRange(0, 10**9),
              help="Warm-up steps, then cosine.")
@click.option("--weight-decay", default=0.0, show_default=True, type=Finite(0, 1e3))
@click.option("--clip", default=1.0, show_default=True, type=Finite(0, 1e12),
              help="Gradient norm clip (0: off).")
@click.option("--checkpoint-every", default=0, show_default=True, type=click.IntRange(0, 10**9),
              help="Also save the weights every N steps.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**63 - 1))
@backend_option
@level_option(0)
@click.option("--devices", type=click.IntRange(min=1), metavar="N",
              help="With --backend jax: shard each batch over N devices, data-parallel "
                   "(default: every device JAX sees; --batch must split evenly).")
@click.option("--distributed", is_flag=True,
              help="With --backend jax: join the other hosts first (jax.distributed."
                   "initialize; found from SLURM/Open MPI, or the three options below).")
@click.option("--coordinator", metavar="HOST:PORT", help="Process 0's address (--distributed).")
@click.option("--num-processes", type=click.IntRange(min=1), help="Hosts in all (--distributed).")
@click.option("--process-id", type=click.IntRange(min=0), help="This host's rank (--distributed).")
@verbosity_options
@plugin_option
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True,
              help="Weights .npz; the forward graph goes beside it as .json.")
def train_cmd(model, task, data, preset, sets, steps, batch, seq_len, optimizer, lr,
              warmup, weight_decay, clip, checkpoint_every, seed, backend, level, devices,
              distributed, coordinator, num_processes, process_id, output):
    """Train a zoo model, or any graph file with a scalar loss output, on a task; save its
    weights (and the forward graph beside them, for generate).

    Examples: tgraph train transformer --task reverse --preset tiny -o rev.npz;
    tgraph train my_gpt.json --data corpus.txt -o w.npz
    """
    import numpy as np

    from tgraph.io import all_or_nothing, remove_stale_temp_files, save_graph
    from tgraph.params import init_params
    from tgraph.runtime import executable
    from tgraph.runtime import trainer as make_trainer
    from tgraph.train import OPTIMIZERS, warmup_cosine
    from tgraph.train.fit import fixed_batch, forward_graph

    graph_path = Path(output).with_suffix(".json")
    for stale in remove_stale_temp_files(output, graph_path):  # left by a killed run
        status(f"removed {stale}, left by an interrupted run")
    task = task or ("text" if data else None)
    if task is None:
        raise click.UsageError("give --task NAME, or --data FILE for --task text")
    distributed = distributed or any(x is not None for x in (coordinator, num_processes,
                                                              process_id))
    if distributed:
        if backend != "jax":
            raise click.UsageError("--distributed needs --backend jax")
        from tgraph.train.data_parallel import initialize_distributed

        initialize_distributed(coordinator, num_processes, process_id)
    graph, job = _graph_and_task(model, task, data, preset, sets, seq_len)
    names = [v.name for v in graph.inputs]
    extra = {"weight_decay": weight_decay}
    trainer = make_trainer(graph, init_params(graph, seed), OPTIMIZERS[optimizer](lr, **extra),
                           backend, clip, devices, level)
    rng = np.random.default_rng(seed)
    batch = fixed_batch(graph) or batch  # a graph saved with a fixed B takes only that
    losses = trainer.fit(lambda step: job.batch(rng, batch, names), steps,
                         warmup_cosine(lr, steps, min(warmup, steps // 2)),
                         output if checkpoint_every else None, checkpoint_every)
    forward = forward_graph(graph)
    if task == "text":
        forward.meta["text"] = {**job.codec.to_meta(), "context": job.seq_len}
    with all_or_nothing():  # the weights and their graph, or neither
        trainer.save(output)
        save_graph(forward, graph_path)
    status(f"wrote {output} and {graph_path}")
    final = float(np.mean(losses[-20:]))
    click.echo(f"loss {losses[0]:.4f} -> {final:.4f} (mean of the last "
               f"{min(20, len(losses))} steps)")
    if task == "text":
        click.echo(f"{final:.4f} nats/token against the unigram entropy of the data, "
                   f"{job.unigram_entropy():.4f}")
    elif "logits" in forward.outputs:
        acc = job.accuracy(executable(forward, backend), trainer.host_params(),
                           np.random.default_rng(seed + 1))
        click.echo(f"exact-sequence accuracy on held-out sequences {acc:.1%}")


def _graph_and_task(spec, task, data, preset, sets, seq_len):
    """The graph to train (a zoo model built to fit the task, or a graph file checked
    against it) and the task, sized to the graph."""
    from tgraph.cli.common import is_graph_file
    from tgraph.io import load_graph
    from tgraph.models import build_model, get_spec
    from tgraph.train import fit
    from tgraph.train.tasks import SequenceTask, TextTask, make_task

    if is_graph_file(spec):
        if preset or sets:
            raise TGraphError("--preset/--set apply to a model name, not a graph file")
        graph = load_graph(spec)
    else:  # a zoo model, built with the loss and the task's vocab and context
        sizing = make_task(task, data, seq_len)
        overrides = {**parse_pairs(sets, "--set"), **sizing.model_overrides()}
        graph = build_model(get_spec(spec).name, preset, loss=True, **overrides)
    fit.check_loss(graph)
    text = task == "text"
    cls = TextTask if text else SequenceTask
    fit.check_inputs(graph, task, cls.feeds, cls.model)
    limit = fit.context(graph, "tokens" if text else "tgt_tokens")
    if seq_len is None and limit:
        seq_len = min(64 if text else 8, limit)
    ids = fit.token_ids(graph)
    job = make_task(task, data, seq_len, ids)
    if not text and ids is not None and ids < job.vocab:
        raise TGraphError(f"task {task} needs {job.vocab} token ids (10 digits and BOS) "
                          f"but graph {graph.name!r} has {ids}")
    return graph, job


@click.command("generate")
@graph_source
@weights_option
@click.option("--prompt", default="", help="Text to continue.")
@click.option("--length", default=200, show_default=True, type=click.IntRange(0, 10**6),
              help="Characters to sample.")
@click.option("--temperature", default=0.8, show_default=True, type=Finite(0, 1e6),
              help="0: greedy.")
@click.option("--top-k", default=0, show_default=True, type=click.IntRange(0, 2**31),
              help="Sample among the k likeliest.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**63 - 1))
@backend_option
def generate_cmd(graph, weights, prompt, length, temperature, top_k, seed, backend):
    """Sample text from a GPT trained with tgraph train --task text.

    Example: tgraph generate text.json --weights text.npz --prompt "The " --length 300
    """
    import numpy as np

    from tgraph.io import load_weights
    from tgraph.runtime import executable
    from tgraph.train.sample import generate
    from tgraph.train.tasks import codec_from_meta

    codec = codec_from_meta(graph.meta)
    if codec is None:
        raise TGraphError(f"graph {graph.name!r} has no text vocabulary: use the .json "
                          "that tgraph train --task text wrote beside its weights")
    if not weights:
        raise TGraphError("give the trained weights with --weights W.npz")
    start = codec.encode(prompt) or [0]  # no prompt: start from the first id
    ids = generate(executable(graph, backend), load_weights(weights, graph), start, length,
                   graph.meta["text"]["context"], temperature, top_k,
                   np.random.default_rng(seed), codec.size)
    click.echo(codec.decode(ids if prompt else ids[1:]))
