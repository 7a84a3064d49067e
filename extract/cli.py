"""``nc-extract``: per-layer features of clean and attacked inputs into a zarr store."""

from __future__ import annotations

import argparse
import shlex
import sys

from ncprobe.data.cli_support import (
    OneLineParser,
    UserError,
    add_common_flags,
    csv_list,
    run_command,
)
from ncprobe.data.store.layout import COMPRESSIONS

from .extraction import ExtractConfig, extract_store, list_layers
from .models import parse_arch_kwargs

EXAMPLES = """examples:
  nc-extract --checkpoint runs/digits-st/checkpoints/epoch-0120.pt --out runs/digits-st/acts.zarr \\
             --attack clean --attack pgd:norm=linf,eps=0.1,steps=20 \\
             --attack pgd:norm=linf,eps=0.1,steps=20,target=next \\
             --attack noise:kind=gaussian,eps=0.7
  nc-extract --checkpoint 'runs/c10/checkpoints/epoch-*.pt' --layers penultimate,layer4.1 \\
             --reduction '*=avgpool' --dtype float16 --device cuda --amp --out c10.zarr
  nc-extract --list-layers --checkpoint runs/digits-st/checkpoints/epoch-0120.pt
  HF_HUB_OFFLINE=1 nc-extract --arch timm:resnet50.a1_in1k --pretrained \
             --dataset imagefolder --data-root imagenette2 --out in1k-r50.zarr

attacks: clean | pgd:norm=linf|l2,eps=E,steps=N[,step=S,restarts=R,target=next|random|
  least-likely|K,random_start=true|false,name=NAME] | fgsm:eps=E[,target=...] |
  noise:kind=gaussian|gaussian-sigma|sign,eps=E | autoattack:eps=E[,norm=linf|l2,
  version=standard|plus|rand|custom,attacks=apgd-ce+apgd-t...] (extra ncprobe[autoattack];
  seeded per block, but its result depends on --batch-size).  E may be a fraction: 8/255
reductions: flatten (default) | avgpool | maxpool | avgpool:K | maxpool:K, optionally +proj:D
"""


def _reductions(items):
    out = {}
    for item in items or []:
        layer, eq, spec = item.partition("=")
        if not eq:
            raise argparse.ArgumentTypeError(f"--reduction {item!r}: expected LAYER=SPEC or *=SPEC")
        out[layer] = spec
    return out


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="nc-extract", epilog=EXAMPLES, aliases={"root": "--data-root"},
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Attack a model's inputs and store every captured "
                                            "layer's features of clean and perturbed inputs in "
                                            "an ncprobe-activations/1 zarr store (resumable).")
    p.add_argument("--checkpoint", action="append",
                   help="checkpoint file, glob or Hugging Face folder; repeat for several "
                        "epochs (optional with --arch hf:FOLDER: its own weights)")
    p.add_argument("--out", help="store to write, e.g. acts.zarr")
    p.add_argument("--attack", action="append", help="a condition; repeatable (default: clean)")
    p.add_argument("--splits", help="comma-separated splits (default: all of the dataset)")
    p.add_argument("--layers", default="all",
                   help="capture points, module paths at any depth or globs ('blocks.*', "
                        "'layer?'), comma-separated; all: the model's stages, the "
                        "classifier's input (penultimate) and the logits")
    p.add_argument("--reduction", action="append", metavar="LAYER=SPEC",
                   help="per-layer reduction, '*=SPEC' for every layer")
    p.add_argument("--project", type=int, help="random projection to D dims for wider layers")
    p.add_argument("--dataset", help="override the dataset named in the checkpoint sidecar")
    p.add_argument("--data-root", help="folder of the dataset files")
    p.add_argument("--arch", help="override the architecture named in the checkpoint sidecar; "
                                  "a built-in name, torchvision:NAME, timm:NAME[.TAG], "
                                  "hf:FOLDER, hf:ORG/NAME (a hub id: pretrained) or "
                                  "package.module:factory")
    p.add_argument("--pretrained", nargs="?", const="", metavar="TAG",
                   help="the hub's pretrained weights of --arch torchvision:NAME (TAG: "
                        "DEFAULT or an enum member such as IMAGENET1K_V2), timm:NAME (a "
                        "pretrained tag) or hf:ORG/NAME (a revision), through the package's "
                        "own cache; HF_HUB_OFFLINE=1 reads the caches only. Images are "
                        "resized, cropped and normalised as the weights say")
    p.add_argument("--class-map", metavar="FILE",
                   help="dataset class name -> model output index ('name index' lines or a "
                        "JSON object), for a model with more outputs than the dataset has "
                        "classes (found by itself for ImageNet WordNet-id folders and a "
                        "model's own label names)")
    p.add_argument("--arch-kwargs", metavar="K=V,...",
                   help="keyword arguments of the factory (int, float, bool or str literals); "
                        "the class count goes to num_classes or n_classes if it takes one "
                        "(num_classes if it takes **kwargs)")
    p.add_argument("--classifier", metavar="PATH",
                   help="module path of a foreign model's final nn.Linear, at any depth "
                        "(default: the last nn.Linear with the dataset's class count; its "
                        "input is captured as the layer penultimate)")
    p.add_argument("--output-key", metavar="KEY",
                   help="where the logits are in what the model returns: a mapping key or "
                        "tuple index (default: a tensor, a tuple's first element, or "
                        "'logits' of a mapping / ModelOutput)")
    p.add_argument("--strip-prefix", metavar="P",
                   help="take the checkpoint keys under this prefix, without it (e.g. "
                        "model. for a LightningModule's attribute; found by itself when only "
                        "one prefix fits)")
    p.add_argument("--checkpoint-key", metavar="KEY",
                   help="the key of the state dict in a checkpoint that wraps several")
    p.add_argument("--normalize", metavar="dataset|none|auto|M,../S,..",
                   help="input normalisation the model gets (default: the checkpoint's, else "
                        "the dataset's): 'none' when the model normalises itself, 'auto' for "
                        "the model source's (timm pretrained_cfg, a Hugging Face processor "
                        "config), or explicit per-channel means/stds; attacks stay in [0, 1] "
                        "pixels")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    p.add_argument("--compression", default="lz4", choices=list(COMPRESSIONS))
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--chunk-samples", type=int, help="samples per chunk (default: ~16 MiB)")
    p.add_argument("--limit", type=int, help="stratified subset of about N samples per split")
    p.add_argument("--max-per-class", type=int, help="at most N samples per class and split")
    p.add_argument("--seed", type=int, default=0, help="seed of attack starts and noise")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda:N")
    p.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: 1 for small models)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a store written by a different configuration")
    p.add_argument("--repair", action="store_true",
                   help="read every chunk of an existing store and rewrite those that fail "
                        "their checksum")
    p.add_argument("--list-layers", action="store_true",
                   help="print capturable layers with their output shapes and exit")
    p.add_argument("--all-modules", action="store_true",
                   help="with --list-layers: every leaf module, not just the capture points")
    add_common_flags(p)
    return p


def _run(args) -> int:
    if not args.checkpoint and not (args.arch or "").startswith("hf:") \
            and args.pretrained is None:
        raise UserError("--checkpoint is required (a file, glob or Hugging Face folder), "
                        "unless --arch hf:FOLDER names a folder with its weights or "
                        "--pretrained takes them from the model's hub")
    cfg = ExtractConfig(checkpoints=args.checkpoint or [], attacks=args.attack or ["clean"],
                        splits=csv_list(args.splits), layers=csv_list(args.layers),
                        reductions=_reductions(args.reduction), project=args.project,
                        dataset=args.dataset, data_root=args.data_root, arch=args.arch,
                        dtype=args.dtype, compression=args.compression,
                        batch_size=args.batch_size, chunk_samples=args.chunk_samples,
                        limit=args.limit, max_per_class=args.max_per_class, seed=args.seed,
                        amp=args.amp, arch_kwargs=parse_arch_kwargs(args.arch_kwargs),
                        checkpoint_key=args.checkpoint_key, normalize=args.normalize,
                        classifier=args.classifier, output_key=args.output_key,
                        strip_prefix=args.strip_prefix, pretrained=args.pretrained,
                        class_map=args.class_map)
    if args.list_layers:
        rows, norm = list_layers(cfg, args.all_modules)
        print(f"# input normalisation ({norm['mode']}): mean {tuple(norm['mean'])}, "
              f"std {tuple(norm['std'])}")
        print(f"{'# name':32s} {'module':32s} {'output shape':20s} {'reduction':10s} dim")
        for name, module, shape, reduction, dim in rows:
            print(f"{name:32s} {module:32s} {str(tuple(shape)):20s} {reduction:10s} {dim}")
        return 0
    if not args.out:
        raise UserError("--out is required (the store to write), unless --list-layers")
    extract_store(cfg, args.out, overwrite=args.overwrite, repair=args.repair,
                  device=args.device,
                  threads=args.threads, progress=not args.no_progress,
                  command=shlex.join(["nc-extract", *sys.argv[1:]]))
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("nc-extract", build_parser(), _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
