"""The ``xlgen`` command line: one subcommand per entry point.

    xlgen train      train a model (also ``python -m xlgen.training.train``, ``accelerate launch``)
    xlgen evaluate   metrics of a model on a labelled split, as JSON
    xlgen predict    labels with scores for texts or a JSON Lines file
    xlgen cluster    label clusters for the bcl / mcg variants (xlgen train --variant bcl|mcg)
    xlgen select, simulate-al, simulate-new-labels, serve, export   (see their --help)

Run ``xlgen <command> --help`` for every option.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from xlgen.config import HelpFormatter, add_arguments, from_arguments, overrides
from xlgen.data import DataError, Document, find_split, read_documents
from xlgen.decoding import BACKENDS, DecodingConfig
from xlgen.extras import MissingExtra, require


def _load_model(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from xlgen.devices import resolve_device
    from xlgen.model import XLGenModel

    return XLGenModel.load(args.model, device=resolve_device(args.device), backend=args.backend)


def _decoding(args: argparse.Namespace, model) -> DecodingConfig:  # type: ignore[no-untyped-def]
    """The model's decoding defaults, overridden by the options given on the command line."""
    from dataclasses import replace

    return replace(model.decoding, **overrides(DecodingConfig, args))


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model directory (the model/ folder of a training run)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, or auto")
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="inference backend: auto is the fastest valid export in the model directory (xlgen export), else torch")
    p.add_argument("--threshold", type=float, default=None, help="score threshold (default: the model's tuned one)")
    add_arguments(p, DecodingConfig, title="decoding (default: the model's saved settings)", unset=True)


# ------------------------------------------------------------------------------------------- train


def cmd_train(args: argparse.Namespace) -> int:
    from xlgen.training.config import TrainConfig
    from xlgen.training.train import run

    metrics = run(from_arguments(TrainConfig, args)).metrics
    keys = [k for k in ("dev_micro_f1", "dev_macro_f1", "test_micro_f1", "test_macro_f1", "test_p_at_1") if k in metrics]
    print(json.dumps({k: round(metrics[k], 4) for k in keys}))
    print(f"model saved to {Path(args.output_dir) / 'model'}")
    return 0


# ---------------------------------------------------------------------------------------- evaluate


def _eval_docs(path: str, split: str) -> list[Document]:
    p = Path(path)
    return read_documents(find_split(p, split) if p.is_dir() else p)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from xlgen.evaluation import Evaluator

    docs = _eval_docs(args.data, args.split)
    model = _load_model(args)
    evaluator = Evaluator(docs, _decoding(args, model), oracle_clusters=args.oracle_clusters)
    metrics = evaluator.run(model, threshold=args.threshold, tune=args.tune_threshold).metrics
    metrics["macro_f1_note"] = "macro-F1 averages over the labels that occur in this split"  # type: ignore[assignment]
    text = json.dumps(metrics, indent=1)
    if args.output:
        Path(args.output).write_text(text + "\n")
    print(text)
    return 0


# ----------------------------------------------------------------------------------------- predict


def _predict_inputs(args: argparse.Namespace) -> list[Document]:
    if args.input:
        return read_documents(args.input, require_labels=False)
    if args.texts:
        return [Document(id=str(i), text=t) for i, t in enumerate(args.texts)]
    lines = [line for line in sys.stdin.read().splitlines() if line.strip()]
    if not lines:
        raise DataError("no input: give texts, --input FILE, or lines on standard input")
    return [Document(id=str(i), text=t) for i, t in enumerate(lines)]


def cmd_predict(args: argparse.Namespace) -> int:
    docs = _predict_inputs(args)
    model = _load_model(args)
    preds = model.predict([d.text for d in docs], _decoding(args, model), args.threshold)
    out = open(args.output, "w") if args.output else sys.stdout  # noqa: SIM115
    try:
        for d, p in zip(docs, preds, strict=True):
            labels = [{"label": x, "score": round(s, 4), "new": n} for x, s, n in zip(p.labels, p.scores, p.new, strict=True)]
            out.write(json.dumps({"id": d.id, "text": d.text, "labels": labels}, ensure_ascii=False) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


# -------------------------------------------------------------------------------------------- main


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only``, just that subcommand gets its options (others import nothing)."""
    parser = argparse.ArgumentParser(prog="xlgen", description=__doc__, formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}

    def train_options(p: argparse.ArgumentParser) -> None:
        from xlgen.training.config import TrainConfig

        add_arguments(p, TrainConfig)

    def evaluate_options(p: argparse.ArgumentParser) -> None:
        _add_model_options(p)
        p.add_argument("--data", required=True, help="a labelled file, or a dataset folder (then --split picks the file)")
        p.add_argument("--split", default="test", help="split to read from a dataset folder")
        p.add_argument("--tune-threshold", action="store_true", help="tune the threshold on this data and report at it")
        p.add_argument("--oracle-clusters", action="store_true",
                       help="mcg models: append the gold clusters instead of predicted ones (the upper bound of cluster guidance)")
        p.add_argument("--output", help="also write the metrics JSON to this file")

    def predict_options(p: argparse.ArgumentParser) -> None:
        _add_model_options(p)
        p.add_argument("texts", nargs="*", help="texts to tag (else --input, else one text per line on standard input)")
        p.add_argument("--input", help="JSON Lines file of documents ({'id', 'text'}; labels optional)")
        p.add_argument("--output", help="write JSON Lines here instead of standard output")

    def lazy(module: str, adder: str, runner: str, extra: str | None = None):  # type: ignore[no-untyped-def]
        """Options and handler from another module, imported only when that command runs; with ``extra``, the
        optional extra the module needs is checked first (:class:`~xlgen.extras.MissingExtra` names it)."""
        import importlib

        def load(command: str):  # type: ignore[no-untyped-def]
            if extra is not None:
                require(extra, f"xlgen {command}")
            return importlib.import_module(module)

        return (lambda p: getattr(load(p.prog.split()[-1]), adder)(p),
                lambda a: getattr(load(a.command), runner)(a))

    commands["train"] = ("train a model, evaluate it on dev and test, save it", train_options, cmd_train)
    commands["evaluate"] = ("metrics of a model on a labelled split, as JSON", evaluate_options, cmd_evaluate)
    commands["predict"] = ("labels with scores for texts", predict_options, cmd_predict)
    commands["cluster"] = ("cluster a dataset's labels (K-means over label features) for the bcl / mcg variants",
                           *lazy("xlgen.clustering.cli", "add_cluster_arguments", "cmd_cluster"))
    commands["select"] = ("rank pool documents for annotation by an acquisition strategy",
                          *lazy("xlgen.training.al_cli", "add_select_arguments", "cmd_select"))
    commands["simulate-al"] = ("active-learning simulation: strategies against random on a labelled dataset",
                               *lazy("xlgen.training.al_cli", "add_simulate_arguments", "cmd_simulate", extra="plots"))
    commands["simulate-new-labels"] = ("new labels added by name: binary questions, greedy against random, recall@10 and forgetting",
                                       *lazy("xlgen.training.new_labels", "add_simulate_arguments", "cmd_simulate", extra="plots"))
    commands["serve"] = ("run the REST service", *lazy("xlgen.service.serve", "add_serve_arguments", "cmd_serve", extra="serve"))
    commands["export"] = ("write an ONNX Runtime or CTranslate2 backend into a model directory",
                          *lazy("xlgen.service.export_cli", "add_export_arguments", "cmd_export"))
    for name, (help_text, add, fn) in commands.items():
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
        if only is None or only == name:
            add(p)
        p.set_defaults(func=fn)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions a user's input causes, each reported as one line (others are bugs: traceback).

    Bad data (:class:`DataError`) and bad values (``ValueError``: options, a broken ``xlgen.json``,
    a device this machine lacks), files that cannot be read or written (``OSError``, including a
    Hub name that cannot be fetched), an export of other weights (``StaleExport``), and a missing
    optional package (``ImportError``; :class:`~xlgen.extras.MissingExtra` names the extra to install).
    """
    from xlgen.backends.export import StaleExport

    return DataError, ValueError, OSError, StaleExport, ImportError


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one subcommand; exit status 0, 2 for a user error (one line on standard error, the
    same form as argparse's own), 130 when interrupted."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and not argv[0].startswith("-") else ""
    try:
        parser = build_parser(only=command)
    except MissingExtra as e:  # a command whose extra is not installed: even its --help needs it
        print(f"xlgen {command}: error: {e}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    from xlgen.progress import quiet_library_bars

    quiet_library_bars()  # in a log, the libraries' own carriage-return bars are noise; ours write plain lines
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print(f"xlgen {args.command}: interrupted", file=sys.stderr)
        return 130
    except _user_errors() as e:
        message = " ".join(str(e).split()) or type(e).__name__  # one line
        print(f"xlgen {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
