"""``fclens tree``: the recursive split of one class's weights."""

from __future__ import annotations

import argparse

from fclens.cli.common import command, load, model_flags, print_json, tree_flags
from fclens.options import EXPLAIN_DEFAULTS


def register(commands: argparse._SubParsersAction) -> None:
    parser = command(commands, "tree", run, "the recursive split of one class's weights")
    model_flags(parser)
    parser.add_argument("--class", dest="target", required=True, help="class index or name")
    tree_flags(parser, EXPLAIN_DEFAULTS)


def run(args: argparse.Namespace) -> int:
    from fclens.tree import split_tree

    model = load(args)
    k = model.class_index(args.target)
    tree = split_tree(model.head.weight[k].cpu(), min_size=args.min_size, mode=args.mode, class_index=k)
    if args.json:
        print_json(
            {"model": model.name, "class": {"index": k, "name": model.class_names[k]}, **tree.to_dict()}
        )
    else:
        print(tree.to_text(class_name=model.class_names[k]))
    return 0
