"""Official benchmark files, read into the same Table as the packaged one.

    read("nb201", path)   a NAS-Bench-201 API file (.pth, through the
                          `nas-bench-201` package) or a NATS-Bench topology
                          file (.pickle.pbz2, through `nats_bench`): both are
                          pickles, and loading a pickle runs code, so this
                          happens only for a file the user names. Columns as
                          nb201_accuracies: test accuracy per data set and the
                          cifar10-valid validation accuracy (200 epochs, mean
                          over seeds), params_m.
    read("nb101", path)   nasbench_only108.tfrecord (or nasbench_full), read
                          without TensorFlow: TFRecord framing checked with its
                          CRCs, each record's JSON, its metrics protobuf
                          (model_metrics.proto) decoded by hand. One row per
                          cell trained 108 epochs: cifar_acc_108 (test, as
                          test_143) and val_accuracy (%, as naslib_500), each
                          the mean over the repeats.
    read("nlp", path)     NAS-Bench-NLP training logs (a folder of
                          log_stats_model_*.json or their .zip), one row per
                          log, as wt2_summary.

Every file is opened through textfile's checked reader (a FIFO, a device or
a name the file system cannot hold is one line) and read within bounds: a
TFRecord record no longer than the file holds nor MAX_RECORD_BYTES, a log no
larger than MAX_LOG_BYTES (a zip's member checked before it is inflated),
JSON nested too deeply refused as such.

NAS-Bench-101 stores each cell once, pruned, in one labelling; a stored cell
(any labelling) finds its row by the benchmark's own graph hash, computed here
(`nb101.nasbench_hash`), when `archs` are given.
"""

from __future__ import annotations

import base64
import json
import math
import os
import stat
import struct
import zipfile
from pathlib import Path

from epsinas_onnx.core.tables import Table
from epsinas_onnx.core.errors import UserError, first_line
from epsinas_onnx.core.textfile import (check_regular_file, file_status, open_regular_file, parse_json, read_member,
                                        read_regular_file, size_text)

NB201_EXTRA = 'pip install "epsinas-onnx[nasbench]"'
NB201_DATASETS = {"cifar10": "cifar10", "cifar100": "cifar100", "imagenet16_120": "ImageNet16-120"}
MAX_RECORD_BYTES = 64 * 2**20  # a NAS-Bench-101 record is about 1 KB
MAX_LOG_BYTES = 16 * 2**20  # a NAS-Bench-NLP log is a few KB
WT2_COLUMNS = ("recepie_id", "status", "num_params", "epochs_logged", "final_val_loss", "min_val_loss",
               "final_test_loss", "recepie")


def read(space: str, path, archs=None) -> Table:
    path = Path(path)
    if file_status(path, "benchmark file") is None:
        raise UserError(f"benchmark file not found: {path} (check the path)")
    if space == "nb201":
        return read_nb201(path)
    if space == "nb101":
        return read_nb101_tfrecord(path, archs)
    return read_nlp_logs(path)


def _text(value: float) -> str:
    """A number as the packaged tables write it (empty for NaN / missing)."""
    return "" if value is None or not math.isfinite(value) else repr(float(value))


# ---------------------------------------------------------------- NAS-Bench-201 / NATS-Bench


def _load_api(load, path: Path, package: str):
    """The package's API object; its failure (a file of another kind, a newer format) as one line."""
    try:
        return load()
    except Exception as exc:  # the packages raise AssertionError, ValueError, pickle errors...
        raise UserError(f"{package} could not load {path} ({first_line(exc, 200)}): is it the benchmark's own file?") from None


def read_nb201(path: Path) -> Table:
    name = path.name
    if name.endswith((".pth", ".pickle.pbz2")):  # the packages open it by name: checked here first
        check_regular_file(path, "benchmark file")
    if name.endswith(".pth"):
        try:
            from nas_201_api import NASBench201API
        except ImportError:
            raise UserError(f"reading {name} needs the nas-bench-201 package (and torch): {NB201_EXTRA}") from None
        api = _load_api(lambda: NASBench201API(str(path), verbose=False), path, "nas-bench-201")
    elif name.endswith(".pickle.pbz2"):
        try:
            import nats_bench
        except ImportError:
            raise UserError(f"reading {name} needs the nats_bench package: {NB201_EXTRA}") from None
        api = _load_api(lambda: nats_bench.create(str(path), "tss", fast_mode=False, verbose=False), path, "nats_bench")
    else:
        raise UserError(f"{path} is not a NAS-Bench-201 file (.pth) or a NATS-Bench topology file "
                        "(NATS-tss-*.pickle.pbz2, the single-file version)")
    columns = ["index", "arch", *NB201_DATASETS, "cifar10_valid", "params_m"]
    rows = []
    for index, arch in enumerate(api.meta_archs):
        if index not in api.arch2infos_dict:
            continue  # an index the file holds no results for
        row = {"index": str(index), "arch": arch}
        for column, dataset in NB201_DATASETS.items():
            row[column] = _text(api.get_more_info(index, dataset, hp="200", is_random=False)["test-accuracy"])
        row["cifar10_valid"] = _text(
            api.get_more_info(index, "cifar10-valid", hp="200", is_random=False)["valid-accuracy"])
        row["params_m"] = _text(api.get_cost_info(index, "cifar10", hp="200")["params"])
        rows.append(row)
    return Table(str(path), columns, rows)


# ---------------------------------------------------------------- NAS-Bench-101 tfrecord


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1  # Castagnoli, reflected
        table.append(crc)
    return table


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _CRC32C
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's CRC: the CRC32-C rotated right by 15 bits plus a constant."""
    return _masked(crc32c(data))


def _masked(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def crc32c_each(chunks: list[bytes]) -> list[int]:
    """crc32c of each chunk, computed side by side with numpy, one byte
    position at a time (the same table as crc32c: about 100 times its speed
    on the few hundred bytes of a NAS-Bench-101 record)."""
    import numpy as np

    lengths = np.fromiter(map(len, chunks), np.int64, len(chunks))
    order = np.argsort(-lengths, kind="stable")  # longest first: the rows still going are a prefix
    longest = int(lengths.max()) if len(chunks) else 0
    rows = np.zeros((len(chunks), longest), np.uint8)
    for row, k in enumerate(order):
        rows[row, :lengths[k]] = np.frombuffer(chunks[k], np.uint8)
    table = np.array(_CRC32C, np.uint32)
    crc = np.full(len(chunks), 0xFFFFFFFF, np.uint32)
    going = np.searchsorted(-lengths[order], -np.arange(longest), side="left")  # rows longer than j: [:going[j]]
    for j in range(longest):
        k = going[j]
        crc[:k] = table[(crc[:k] ^ rows[:k, j]) & 0xFF] ^ (crc[:k] >> 8)
    result = np.empty_like(crc)
    result[order] = crc ^ np.uint32(0xFFFFFFFF)
    return [int(c) for c in result]


TFRECORD_BATCH = 4096  # records whose data checksums are computed together


def tfrecords(path: Path, check_data_crc: bool = True):
    """The records of a TFRecord file: uint64 length, uint32 masked CRC of the
    length, the data, uint32 masked CRC of the data (little-endian). The data
    checksums of TFRECORD_BATCH records are checked together (crc32c_each)
    before any of them is handed on. A length past the end of the file, or
    past MAX_RECORD_BYTES, is refused before it is read."""
    with open_regular_file(path, "TFRecord file", kind="; give nasbench_only108.tfrecord") as f:
        size = os.fstat(f.fileno()).st_size
        number = 0
        batch: list[bytes] = []
        expected: list[int] = []
        held = 0  # bytes in `batch`
        while True:
            head = f.read(12)
            if head:
                number += 1
                if len(head) < 12:
                    raise UserError(f"{path}: record {number} is cut short (not a complete TFRecord file)")
                length_bytes, length_crc = head[:8], struct.unpack("<I", head[8:])[0]
                if masked_crc32c(length_bytes) != length_crc:
                    raise UserError(f"{path}: record {number} has a bad length checksum (not a TFRecord file, or corrupt)")
                (length,) = struct.unpack("<Q", length_bytes)
                left = size - f.tell()
                if length + 4 > left:
                    raise UserError(f"{path}: record {number} claims {length} bytes, but the file has only "
                                    f"{max(left - 4, 0)} left: it is cut short (not a complete TFRecord file)")
                if length > MAX_RECORD_BYTES:
                    raise UserError(f"{path}: record {number} claims {size_text(length)}, over the "
                                    f"{size_text(MAX_RECORD_BYTES)} a NAS-Bench-101 record can be (about 1 KB): "
                                    "is it the benchmark's file?")
                data = f.read(length)
                tail = f.read(4)
                if len(data) < length or len(tail) < 4:
                    raise UserError(f"{path}: record {number} is cut short (not a complete TFRecord file)")
                batch.append(data)
                expected.append(struct.unpack("<I", tail)[0])
                held += length
            # a batch ends at TFRECORD_BATCH records, or MAX_RECORD_BYTES of them: memory stays bounded
            if batch and (not head or len(batch) == TFRECORD_BATCH or held >= MAX_RECORD_BYTES):
                if check_data_crc:
                    for i, crc in enumerate(crc32c_each(batch)):
                        if _masked(crc) != expected[i]:
                            bad = number - len(batch) + 1 + i
                            raise UserError(f"{path}: record {bad} has a bad data checksum (the file is corrupt)")
                yield from batch
                batch, expected, held = [], [], 0
            if not head:
                return


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7


def proto_fields(buf: bytes):
    """(field number, value) of a protobuf message: varints as int, 64-bit
    fields as 8 bytes, length-delimited ones as bytes, 32-bit as 4 bytes."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        wire = key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i:i + n], i + n
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield key >> 3, value


def model_metrics(buf: bytes, final_only: bool = False) -> dict:
    """nasbench.ModelMetrics (model_metrics.proto): evaluation_data = 1
    (repeated EvaluationData: current_epoch 1, training_time 2, train_accuracy
    3, validation_accuracy 4, test_accuracy 5, doubles), trainable_parameters = 2
    (int32), total_time = 3 (double). final_only: decode the last
    evaluation_data alone (the end of training; the reader needs no other)."""
    names = {1: "current_epoch", 2: "training_time", 3: "train_accuracy", 4: "validation_accuracy",
             5: "test_accuracy"}
    out = {"evaluation_data": [], "trainable_parameters": 0}
    evaluations = []
    for field, value in proto_fields(buf):
        if field == 1:
            evaluations.append(value)
        elif field == 2:
            out["trainable_parameters"] = value - (1 << 64) if value >= 1 << 63 else value
        elif field == 3:
            out["total_time"] = struct.unpack("<d", value)[0]
    out["evaluation_data"] = [{names[f]: struct.unpack("<d", v)[0] for f, v in proto_fields(e) if f in names}
                              for e in (evaluations[-1:] if final_only else evaluations)]
    return out


def read_nb101_tfrecord(path: Path, archs=None) -> Table:
    """One row per cell trained for 108 epochs; with `archs` (format_arch
    texts of stored cells), also a row under each of those texts whose pruned
    cell the file holds (matched by nb101.nasbench_hash)."""
    if stat.S_ISDIR(file_status(path, "benchmark file").st_mode):
        raise UserError(f"{path} is a folder, not a file: give nasbench_only108.tfrecord")
    cells: dict[str, dict] = {}
    for number, record in enumerate(tfrecords(path), start=1):
        fields = parse_json(record, f"{path}: record {number}")
        try:
            module_hash, epochs, raw_adjacency, raw_ops, raw_metrics = fields
            if epochs != 108:
                continue
            metrics = model_metrics(base64.b64decode(raw_metrics), final_only=True)
            final = metrics["evaluation_data"][-1]  # the end of training (the API's evaluation_data[2])
            if module_hash not in cells:  # the first record of a cell: its matrix (the others repeat it)
                n = math.isqrt(len(raw_adjacency))
                bits = [int(c) for c in raw_adjacency]
                cells[module_hash] = {"matrix": [bits[i * n:(i + 1) * n] for i in range(n)],
                                      "ops": raw_ops.split(","), "test": [], "valid": [],
                                      "params": metrics["trainable_parameters"]}
        except (ValueError, TypeError, IndexError, KeyError, UnicodeDecodeError) as exc:
            raise UserError(f"{path}: record {number} is not a NAS-Bench-101 record ({exc})") from None
        cell = cells[module_hash]
        cell["test"].append(final.get("test_accuracy", math.nan))
        cell["valid"].append(final.get("validation_accuracy", math.nan))
    if not cells:
        raise UserError(f"{path} holds no NAS-Bench-101 record of 108 epochs")

    def row(arch_text: str, module_hash: str, cell: dict) -> dict:
        return {"arch": arch_text, "module_hash": module_hash,
                "cifar_acc_108": _text(math.fsum(cell["test"]) / len(cell["test"])),
                "val_accuracy": _text(100 * math.fsum(cell["valid"]) / len(cell["valid"])),
                "trainable_parameters": str(cell["params"]), "repeats": str(len(cell["test"]))}

    rows = [row(json.dumps({"matrix": c["matrix"], "ops": c["ops"]}, separators=(",", ":")), h, c)
            for h, c in cells.items()]
    if archs:
        from epsinas_onnx.spaces import nb101

        in_file = {r["arch"] for r in rows}
        for text in dict.fromkeys(archs):
            if text in in_file:
                continue
            pruned = nb101.prune(nb101.parse(text))
            module_hash = nb101.nasbench_hash(pruned.matrix, pruned.ops)
            if module_hash in cells:
                rows.append(row(text, module_hash, cells[module_hash]))
    columns = ["arch", "module_hash", "cifar_acc_108", "val_accuracy", "trainable_parameters", "repeats"]
    return Table(str(path), columns, rows)


# ---------------------------------------------------------------- NAS-Bench-NLP logs


def _log_files(path: Path):
    """(name, bytes) of each log_stats_model_*.json in a folder or a zip, by
    name; each no larger than MAX_LOG_BYTES, a zip's member checked before it
    is inflated."""
    too_large = "a NAS-Bench-NLP training log can be (a few KB): is it the benchmark's log?"
    if stat.S_ISDIR(file_status(path, "benchmark file").st_mode):
        for file in sorted(path.rglob("*.json")):
            yield file.name, read_regular_file(file, "training log", MAX_LOG_BYTES, too_large)
        return
    with open_regular_file(path, "benchmark file", kind="; give a folder of NAS-Bench-NLP logs or their .zip") as handle:
        try:
            with zipfile.ZipFile(handle) as archive:
                for info in sorted((i for i in archive.infolist() if i.filename.endswith(".json")),
                                   key=lambda i: i.filename):
                    yield Path(info.filename).name, read_member(archive, info, f"{path}: {info.filename}",
                                                                MAX_LOG_BYTES, too_large)
        except UserError:
            raise
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError) as exc:
            raise UserError(f"{path} is neither a folder of NAS-Bench-NLP logs nor a zip of them "
                            f"({first_line(exc, 120)})") from None


def read_nlp_logs(path: Path) -> Table:
    """One row per training log, with wt2_summary's columns: epochs_logged =
    the validation losses logged, final_* the last of them (empty when NaN:
    the run diverged), min_val_loss the least finite one."""
    rows = []
    for name, data in _log_files(path):
        log = parse_json(data, f"{path}: {name}")
        try:
            val, test = list(log["val_losses"]), list(log["test_losses"])
            finite_val = [v for v in val if v is not None and math.isfinite(v)]
            rows.append({
                "recepie_id": str(log["recepie_id"]), "status": str(log["status"]),
                "num_params": str(log["num_params"]), "epochs_logged": str(len(val)),
                "final_val_loss": _text(val[-1]) if val else "",
                "min_val_loss": _text(min(finite_val)) if finite_val else "",
                "final_test_loss": _text(test[-1]) if test else "",
                "recepie": log["recepie"],
            })
        except (ValueError, TypeError, KeyError) as exc:
            raise UserError(f"{path}: {name} is not a NAS-Bench-NLP training log ({exc})") from None
    if not rows:
        raise UserError(f"{path} holds no NAS-Bench-NLP training log (log_stats_model_*.json)")
    return Table(str(path), list(WT2_COLUMNS), rows)
