"""Build the benchmark tables that ship in the package (epsinas_onnx/data/).

    python tools/build_tables.py [--data ../shared/data]

reads the development data folder (its README names every source and
licence), keeps the columns the product uses at run time, copies every value
verbatim (the text of the source csv: no number is re-printed), and writes
gzip'd csv files (reproducible: no timestamp in the gzip header) plus
PROVENANCE.md with each table's source, licence, rows and the sha256 of the
source file. Rerunning it on the same data writes the same bytes.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "epsinas_onnx" / "data"

# name -> (source file under the data folder, columns kept (None: all), what it is, source and licence
# exactly as the data folder's README states them)
TABLES = {
    "nb201_accuracies": (
        "nb201/accuracies.csv", None,
        "NAS-Bench-201, all 15,625 architectures: index, arch, CIFAR-10 / CIFAR-100 / ImageNet16-120 test "
        "accuracy (%, 200 epochs, mean over seeds), cifar10-valid validation accuracy (%, 200 epochs), "
        "params_m (millions, 10-class head).",
        "v-tao/nats-bench-landscape (`nats_bench.csv`, test accuracies; the data README states no licence "
        "for it), BayesWatch/nas-without-training (`results/arch_score_acc.pd`, MIT: validation accuracy, "
        "params), joined by index with arch strings checked identical.",
    ),
    "nb201_baselines": (
        "nb201/baselines.csv", ["arch", "naswot_cifar10", "zen_cifar10", "zen_cifar100", "zen_imagenet16_120"],
        "NAS-Bench-201, all 15,625 architectures: the NASWOT v1 score (341 NaN) and the Zen-score per data set "
        "(-1e8 marks a failed architecture).",
        "NASWOT: BayesWatch/nas-without-training (MIT). Zen-score: NAS-Bench-Suite-Zero, automl/NASLib "
        "`run/results/benchmarks/nb201_zen.zip`, Apache-2.0.",
    ),
    "nb201_proxies": (
        "nb201/proxies_subset.csv", None,
        "NAS-Bench-201, 725 / 725 / 724 architectures (CIFAR-10 / CIFAR-100 / ImageNet16-120): 13 proxies of "
        "NAS-Bench-Suite-Zero and NASLib's validation accuracy.",
        "automl/NASLib `naslib/data/zc_nasbench201.json`, Apache-2.0.",
    ),
    "nb101_naslib_500": (
        "nb101/naslib_500.csv", None,
        "NAS-Bench-101, 500 CIFAR-10 architectures (adjacency, ops): 11 proxies and NASLib's validation "
        "accuracy (%). No test accuracy.",
        "automl/NASLib `naslib/data/zc_nasbench101.json`, Apache-2.0.",
    ),
    "nb101_test_143": (
        "nb101/test_143.csv", ["cell", "cifar_acc_108"],
        "NAS-Bench-101, 143 architectures: cell (21 upper-triangle adjacency bits, then the 5 inner ops) and "
        "cifar_acc_108, the CIFAR-10 test accuracy (fraction) at 108 epochs of ONE randomly drawn training seed.",
        "akashjorss/NAS_Search_using_NASBench-101 (the data README states no licence for it).",
    ),
    "nlp_wt2_summary": (
        "nlp/wt2_summary.csv", None,
        "NAS-Bench-NLP, 345 WikiText-2 runs (291 distinct recipes): recipe id, status, parameters, epochs "
        "logged, final and best validation log-loss, final test log-loss, the recipe as JSON.",
        "fmsnew/nas-bench-nlp-release (`train_logs_wikitext-2/logs.zip`, Apache-2.0), summarised one row per "
        "log.",
    ),
    "macro_accuracies": (
        "macro/accuracies.csv", None,
        "NAS-Bench-Macro, all 6,561 architectures (8 digits, one per searchable layer): CIFAR-10 test accuracy "
        "(%) of three training runs and their mean (`mean_acc`) and standard deviation, parameters and FLOPs "
        "as the benchmark counted them. Several keys share one trained network (get_real_arch): 3,969 "
        "distinct results.",
        "xiusu/NAS-Bench-Macro `data/nas-bench-macro_cifar10.json`, Apache-2.0.",
    ),
    "macro_baselines": (
        "macro/accuracies.csv", ["arch", "flops"],
        "NAS-Bench-Macro, all 6,561 architectures: FLOPs as the benchmark counted them (a baseline beside "
        "the parameter count).",
        "xiusu/NAS-Bench-Macro `data/nas-bench-macro_cifar10.json`, Apache-2.0.",
    ),
    "tnb_micro_all": (
        "transnas/micro_all.csv", ["index", "arch", "class_scene", "class_object", "autoencoder", "normal", "jigsaw",
                                   "room_layout", "segmentsemantic"],
        "TransNAS-Bench-101 micro space, all 4,096 cells (six edge ops as NASLib's tuple): per task the "
        "validation metric NASLib's API returns (class_scene, class_object, jigsaw: top-1 %; autoencoder, "
        "normal: SSIM; room_layout: negative L2 loss; segmentsemantic: accuracy %).",
        "automl/NASLib `naslib/data/zc_benchmarks/all_benchmarks_zen.zip`, Apache-2.0 (the benchmark, "
        "yawen-d/TransNASBench, MIT).",
    ),
    "tnb_micro_zen": (
        "transnas/micro_all.csv", ["arch", "zen_class_scene", "zen_class_object", "zen_autoencoder", "zen_normal",
                                   "zen_jigsaw", "zen_room_layout", "zen_segmentsemantic"],
        "TransNAS-Bench-101 micro space, all 4,096 cells: the Zen-score NASLib computed per task.",
        "automl/NASLib `naslib/data/zc_benchmarks/all_benchmarks_zen.zip`, Apache-2.0.",
    ),
    "tnb_micro_proxies": (
        "transnas/proxies_micro.csv", None,
        "TransNAS-Bench-101 micro space, 711 cells per task: NASLib's validation accuracy and 11 proxies "
        "(params and flops in millions, nwot, jacov, snip, grad_norm, grasp, fisher, l2_norm, plain, epe_nas).",
        "automl/NASLib `naslib/data/zc_transbench101_micro.json`, Apache-2.0.",
    ),
    "tnb_macro_proxies": (
        "transnas/proxies_macro.csv", None,
        "TransNAS-Bench-101 macro space, 662 skeletons per task (six digits, zero-padded): NASLib's validation "
        "accuracy and 11 proxies, as tnb_micro_proxies.",
        "automl/NASLib `naslib/data/zc_transbench101_macro.json`, Apache-2.0.",
    ),
}


def build(data: Path, out: Path) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Benchmark tables shipped with epsinas-onnx",
        "",
        "Built by `python tools/build_tables.py` from the project's development data folder; every value",
        "is the text of the source file, unchanged (only the columns listed are kept). Read them with",
        "`epsinas_onnx.experiments.benchmark_tables.packaged(name)`; `evaluate` and `search` use them by default.",
        "",
    ]
    for name, (source, keep, what, provenance) in TABLES.items():
        raw = (data / source).read_bytes()
        reader = csv.DictReader(io.StringIO(raw.decode("utf-8"), newline=""))
        columns = keep or [c for c in reader.fieldnames]
        missing = [c for c in columns if c not in reader.fieldnames]
        if missing:
            raise SystemExit(f"{source} lacks column(s) {', '.join(missing)}")
        text = io.StringIO(newline="")
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(columns)
        rows = 0
        for row in reader:
            writer.writerow([row[c] for c in columns])
            rows += 1
        path = out / f"{name}.csv.gz"
        with path.open("wb") as f, gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0, compresslevel=9) as gz:
            gz.write(text.getvalue().encode("utf-8"))
        lines += [
            f"## {name}.csv.gz",
            "",
            what,
            "",
            f"- source: `{source}` of the data folder (sha256 {hashlib.sha256(raw).hexdigest()[:16]}...), "
            f"{rows} rows",
            f"- columns: {', '.join(columns)}",
            f"- from: {provenance}",
            f"- size: {path.stat().st_size:,} bytes",
            "",
        ]
        print(f"{path}: {rows} rows, {len(columns)} columns, {path.stat().st_size:,} bytes")
    (out / "PROVENANCE.md").write_text("\n".join(lines))
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data",
                        help="the development data folder (default: ../shared/data from the project root)")
    args = parser.parse_args(argv)
    if not (args.data / "README.md").is_file():
        print(f"no data folder at {args.data} (its README.md is missing): give --data", file=sys.stderr)
        return 1
    build(args.data, OUT)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
