"""One cell in full: what produced its number (provenance), its recipe, and its per-layer scores.

Everything a reader needs to trust or reproduce a number sits in its record; this view puts
the parts people ask about first (anchors: dinov2#106, #232, CLIP#353): the selected
hyper-parameters, the effective batch and scaled learning rates, the token kind and block, the
weights hash, the data revision and split policy, and the software versions; then the protocol
as resolved for the cell, each field with its source and whether a task card or an option changed it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb

from aimbench.errors import UserError
from aimbench.report.intervals import Bounds, show
from aimbench.report.tables import Table, hparams_label, percent, set_label
from aimbench.store.records import read_record, runs_dir


def find_cell(con: duckdb.DuckDBPyConnection, results_dir: Path, key: str) -> dict[str, Any]:
    """The newest record of the cell ``key``: a whole cell key, a prefix of one (``aim-1b|dtd``),
    a record file name or a config hash; unique or an error that lists the candidates."""
    matches = con.execute(
        "SELECT cell_key, file, config_hash, protocol, layers_spec FROM latest "
        "WHERE cell_key = $key OR file = $key OR config_hash = $key OR starts_with(cell_key, $key) ORDER BY cell_key, file",
        {"key": key},
    ).fetchall()
    exact = [m for m in matches if key in (m[0], m[1], m[2])]
    if exact:
        matches = exact
    if not matches:
        known = [row[0] for row in con.execute("SELECT cell_key FROM latest ORDER BY cell_key LIMIT 5").fetchall()]
        raise UserError(f"no cell '{key}' in the results; cell keys look like {', '.join(known)} (see 'aimbench report --format csv')")
    if len(matches) > 1:
        shown = ", ".join(f"{m[0]} (config {m[2]}, protocol {m[3]}, layers {m[4]})" for m in matches[:5]) + (
            " ..." if len(matches) > 5 else ""
        )
        raise UserError(f"'{key}' matches {len(matches)} cells: {shown}; give a whole cell key or a config hash")
    return read_record(runs_dir(results_dir) / matches[0][1])


def _listed(values: Any) -> str:
    if isinstance(values, list):
        return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)
    return "–" if values is None else str(values)


def provenance_table(record: dict[str, Any]) -> Table:
    """Key/value lines: the cell's identity, selection, probe recipe, backbone, data and software."""
    probe = record.get("probe_config") or {}
    backbone = record.get("backbone_info") or {}
    features = backbone.get("features") or {}
    environment = record.get("environment") or {}
    best = f"{set_label(record['best_layer_set'])} ({record['best_token']}, {hparams_label(record['best_hparams'])})"
    last = f"{set_label(record['last_layer_set'])} ({record['last_token']}, {hparams_label(record['last_hparams'])})"
    metric = record["metric"]
    lines = [
        ("cell", f"{record['cell_key']}  (config {record['config_hash']}, recorded {record['created_at']})"),
        (f"best layer (val {metric})", f"{best}: val {percent(record['best_val_score'])}, test {percent(record['best_test_score'])}"),
        ("last layer", f"{last}: val {percent(record['last_val_score'])}, test {percent(record['last_test_score'])}"),
        ("secondary metrics", json.dumps(record.get("best_test_secondary") or {}) if record.get("secondary_metrics") else "–"),
        ("probe", f"{probe.get('kind', record['probe'])}; {probe.get('optimizer', '–')}, {probe.get('schedule', '–')}, {probe.get('epochs', '–')} epochs"),
        ("protocol", _protocol_line(record)),
        ("effective batch / lr", f"{probe.get('effective_batch_size', '–')} (base {probe.get('base_batch_size', '–')}); "
                                 f"scaled lr {_listed(probe.get('scaled_learning_rates'))}"),
        ("grid", f"lr {_listed(probe.get('learning_rates'))}; wd {_listed(probe.get('weight_decays'))}"),
        ("selection", str(probe.get("selection", "–"))),
        ("test intervals", interval_line(record)),
        ("features", f"{features.get('source', '–')}; final norm {'applied' if features.get('norm_applied') else 'not applied'}; "
                     f"tokens {_listed(features.get('prefix_layout'))}; {probe.get('feature_norm', '')}".rstrip("; ")),
        ("backbone", f"{record['backbone']} = {backbone.get('arch', '–')} ({backbone.get('adapter', '–')}), depth {backbone.get('depth', '–')}, "
                     f"dtype {record.get('dtype', '–')}, input {(backbone.get('preprocess') or {}).get('image_size', '–')} px"),
        ("weights", (f"{record['weights_name']} = " if record.get("weights_name") else "")
                    + f"{record['weights_id']} sha256:{record['weights_sha256']}"
                    + ("" if "weights_key" not in record else f" (override {record['weights_key']})" if record["weights_key"] else " (the card's)")),
        ("data", f"{record['task']} v{record.get('task_version', '–')} from {record.get('dataset_source', '–')} "
                 f"@ {record.get('dataset_revision', '–')}"),
        ("splits", f"train {record['n_train']} / val {record['n_val']} / test {record['n_test']}; "
                   + ", ".join(f"{k}: {v}" for k, v in (record.get("split_policy") or {}).items())
                   + (f"; --limit {record['image_limit']}" if record.get("image_limit") is not None else "")),
        ("software", ", ".join(f"{k.removesuffix('_version')} {v}" for k, v in environment.items() if k != "device")),
        ("device / time", timing_line(record) or f"{environment.get('device', '–')}; {record.get('wall_time_s', 0.0):.1f} s"),
    ]  # fmt: skip
    return Table(f"{record['backbone']} on {record['task']} — {record['probe']} probe, seed {record['seed']}",
                 ["field", "value"], [[k, v] for k, v in lines])  # fmt: skip


def _s(seconds: float) -> str:
    return f"{seconds:.1f} s"


def timing_line(record: dict[str, Any]) -> str:
    """``load 2.1 s · extraction 25.3 s (300 images, 11.9 img/s) · heads 3.2 s · evaluation 0.4 s ·
    total 31.0 s on cpu``: where the cell's time went (the record's ``timing``); empty for records
    written before it was kept."""
    timing = record.get("timing")
    if not timing:
        return ""
    parts = [f"load {_s(timing['load_s'])}"]
    splits = timing.get("extraction_splits") or {}
    if splits:  # online attentive probes and released heads extract nothing apart
        cached = [name for name, split in splits.items() if not split["images"]]
        if len(cached) == len(splits):
            parts.append(f"extraction {_s(timing['extraction_s'])} (cached)")
        else:
            rate = timing.get("extraction_images_per_s")
            also = f"; {', '.join(cached)} cached" if cached else ""
            parts.append(f"extraction {_s(timing['extraction_s'])} ({timing['extraction_images']} images"
                         + (f", {rate:g} img/s" if rate else "") + f"{also})")  # fmt: skip
    parts += [f"heads {_s(timing['heads_s'])}", f"evaluation {_s(timing['evaluation_s'])}"]
    if timing.get("backbone_forward_s") is not None:  # online probes and released heads run the backbone in those
        parts.append(f"backbone forwards {_s(timing['backbone_forward_s'])} within those")
    device = (record.get("environment") or {}).get("device", "–")
    return " · ".join(parts) + f" · total {_s(timing['total_s'])} on {device}"


def interval_line(record: dict[str, Any]) -> str:
    """How the record's intervals were drawn, and where its per-example outputs are."""
    how, sidecar = record.get("interval"), record.get("predictions")
    if not how:
        return "none: recorded before aimbench kept per-example outputs (re-run the cell for intervals)"
    outputs = f"; per-example outputs {sidecar['file']} ({sidecar['bytes']:,} bytes)" if sidecar else ""
    return f"{how['level']:.0%} {how['method']} over {record['n_test']} test examples, {how['resamples']} resamples, seed {how['seed']}{outputs}"


def at_edge(record: dict[str, Any], layer: dict[str, Any]) -> list[str]:
    """The hyper-parameters of ``layer``'s selected head at the edge of the values its heads tried
    (``aimbench.report.cell_bounds``: lr at either end, wd at the top or at a bottom above 0)."""
    tried: dict[str, set[float]] = {}
    for head in record.get("heads") or []:
        if head.get("layer_set") == layer["layer_set"]:
            for name, value in (head.get("hparams") or {}).items():
                if isinstance(value, (int, float)):
                    tried.setdefault(name, set()).add(float(value))
    edges = []
    for name, short in (("lr", "lr"), ("weight_decay", "wd")):
        value, grid = (layer.get("hparams") or {}).get(name), tried.get(name, set())
        if value is None or len(grid) < 2:
            continue
        low_edge = value == min(grid) and (name == "lr" or value > 0)
        if value == max(grid) or low_edge:
            edges.append(short)
    return edges


def _protocol_line(record: dict[str, Any]) -> str:
    protocol = (record.get("probe_config") or {}).get("protocol")
    if not protocol:
        return record.get("protocol") or "–"
    changed = protocol.get("overridden") or []
    by = ", ".join(f"{f} ({protocol['fields'][f]['from']})" for f in changed)
    return f"{protocol['name']}" + (f"; overridden: {by}" if changed else "; as the card says")


def _value_label(value: Any) -> str:
    if value is None:
        return "none"
    return _listed(value) if isinstance(value, list) else (f"{value:g}" if isinstance(value, float) else str(value))


def protocol_table(record: dict[str, Any]) -> Table | None:
    """Every resolved recipe field with its value, where it comes from and which layer set it
    (the protocol card, the task card, or an explicit option); None for records without one."""
    protocol = (record.get("probe_config") or {}).get("protocol")
    if not protocol:
        return None
    rows = [[name, _value_label(f["value"]), f["from"], f["source"]] for name, f in protocol["fields"].items()]
    notes = ["from: protocol = the protocol card, task = the task card's override, cli = an explicit option"]
    return Table(f"protocol {protocol['name']} as resolved for this cell", ["field", "value", "from", "source"], rows, notes)


def layer_table(record: dict[str, Any]) -> Table:
    """Per-layer-set val/test scores of one record, with the best (by val) and last sets marked."""
    rows = []
    for layer in record["layers"]:
        marks = [m for m in ("best", "last") if record[f"{m}_layer_set"] == layer["layer_set"]]
        edge = at_edge(record, layer)
        interval = layer.get("test_interval")
        bounds = Bounds(interval["low"], interval["high"]) if interval else None
        rows.append(
            [
                set_label(layer["layer_set"]),
                layer["token"],
                hparams_label(layer["hparams"]) + ("^" if edge else ""),
                percent(layer["val_score"]),
                show(layer["test_score"], bounds),
                " ".join(marks),
            ]
        )
    title = (
        f"{record['backbone']} on {record['task']} — {record['probe']} probe, seed {record['seed']} "
        f"(train {record['n_train']} / val {record['n_val']} / test {record['n_test']})"
    )
    notes = [f"weights {record['weights_id']} sha256:{record['weights_sha256'][:12]}; {record['wall_time_s']:.1f} s"]
    if any(r[2].endswith("^") for r in rows):
        notes.append("^ the selected lr or wd is at the edge of the grid its heads tried: the best may lie outside it")
    notes.append(
        "test: ± the larger half of its 95% interval over test examples" if record.get("interval") else "test ±?: no interval recorded"
    )
    plan = (record.get("probe_config") or {}).get("memory_plan")
    if plan:
        notes.append(f"attentive heads: {plan}")
    metric = record["metric"]
    return Table(title, ["layer set", "token", "selected", f"val {metric}", f"test {metric}", ""], rows, notes)
