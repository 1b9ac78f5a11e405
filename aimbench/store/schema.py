"""The results schema in one place: record columns with their DuckDB types, and the views.

Every report, export and ``--sql`` query sees these relations (one in-memory DuckDB session
per command, built by ``aimbench.store.db.connect``):

``runs``
    one row per record file of the current schema version, every column of ``RECORD_COLUMNS``
    plus ``file`` (the record's file name). Records of other versions are counted and left out.
``latest``
    the newest record per ``cell_key`` (backbone|task|probe|seed): re-running a cell, with the
    same or a changed configuration, never duplicates it in a report.
``layer_metrics``
    ``latest`` unnested to one row per (cell, layer set): ``backbone, task, probe, seed,
    cell_key, metric, created_at, layer_set, blocks, layer, token, hparams, val_score,
    test_score, is_best, is_last``. The layer curve is this view ordered by ``layer``.
``published``
    numbers printed in papers (``results/published/*.csv``), one row per (model, layer, task):
    ``source, reference, model, arch, pretrain_data, backbone`` (the aimbench card it matches,
    empty when none), ``probe, layer`` (``last``, ``best`` or a block number as printed),
    ``task, metric, score`` (a fraction, like measured scores), ``position`` (row order in the files).

Scores are fractions in [0, 1] of the task's metric; blocks are 0-indexed (the paper's
layer numbers are kept as printed in ``published.layer``).
"""

from __future__ import annotations

SCHEMA_VERSION = 2

# A layer set's scores: one block or a window of blocks averaged (aimbench.probes.layer_sets).
_LAYER = (
    "STRUCT(layer_set VARCHAR, blocks INTEGER[], layer INTEGER, token VARCHAR, hparams JSON, "
    "val_score DOUBLE, test_score DOUBLE, test_secondary JSON)"
)

# Every field a version-2 record may carry, with the type DuckDB reads it as. Free-form
# dictionaries are JSON so that records of different probes (lr/wd vs k) share one table.
RECORD_COLUMNS: dict[str, str] = {
    # identity
    "schema_version": "INTEGER",
    "record_id": "VARCHAR",  # uuid4 hex
    "created_at": "TIMESTAMPTZ",  # when the record was written; the views show it as a UTC TIMESTAMP
    "cell_key": "VARCHAR",  # backbone|task|probe|seed
    "config_hash": "VARCHAR",  # hash of everything that defines the cell (cards, weights, layers, limit, probe, seed)
    "backbone": "VARCHAR",
    "task": "VARCHAR",
    "probe": "VARCHAR",  # linear | attentive | knn | official:last | official:best
    "protocol": "VARCHAR",  # the protocol card the probe recipe came from (null for released heads and older records)
    "seed": "INTEGER",
    # what was measured on
    "weights_id": "VARCHAR",
    "weights_sha256": "VARCHAR",
    "dtype": "VARCHAR",  # backbone precision
    "task_version": "INTEGER",
    "dataset_source": "VARCHAR",
    "dataset_revision": "VARCHAR",
    "split_policy": "JSON",  # {train, val, test}: how each split was made
    "n_train": "BIGINT",
    "n_val": "BIGINT",
    "n_test": "BIGINT",
    "layers_spec": "VARCHAR",
    "image_limit": "BIGINT",  # null = full splits
    "metric": "VARCHAR",  # top1 | mean_per_class | macro_f1
    "secondary_metrics": "VARCHAR[]",
    # results: best_* is the layer set chosen on val, last_* the one reaching deepest
    **{
        f"{which}_{name}": kind
        for which in ("best", "last")
        for name, kind in (
            ("layer_set", "VARCHAR"),
            ("blocks", "INTEGER[]"),
            ("layer", "INTEGER"),
            ("token", "VARCHAR"),
            ("hparams", "JSON"),
            ("val_score", "DOUBLE"),
            ("test_score", "DOUBLE"),
            ("test_secondary", "JSON"),
        )
    },
    "layers": f"{_LAYER}[]",  # per layer set, the head selected on val
    "heads": "JSON",  # every trained head with its val score (never a test score)
    # how
    "probe_config": "JSON",  # resolved recipe (grid, epochs, batch, ...) + "protocol": each field's value, source, origin
    "backbone_info": "JSON",  # family, adapter, arch, depth, dim, card, licence, preprocess, features
    "task_info": "JSON",  # num_classes, metric, card
    "environment": "JSON",  # aimbench version, git sha, torch, python, device
    "wall_time_s": "DOUBLE",
}

PUBLISHED_COLUMNS: dict[str, str] = {
    "source": "VARCHAR",
    "reference": "VARCHAR",
    "model": "VARCHAR",
    "arch": "VARCHAR",
    "pretrain_data": "VARCHAR",
    "backbone": "VARCHAR",
    "probe": "VARCHAR",
    "layer": "VARCHAR",
    "task": "VARCHAR",
    "metric": "VARCHAR",
    "score_percent": "DOUBLE",
}

LATEST_SQL = """
CREATE VIEW latest AS SELECT * FROM runs
QUALIFY row_number() OVER (PARTITION BY cell_key ORDER BY created_at DESC, record_id) = 1
"""

LAYER_METRICS_SQL = """
CREATE VIEW layer_metrics AS
SELECT backbone, task, probe, seed, cell_key, metric, created_at,
       l.layer_set, l.blocks, l.layer, l.token, l.hparams, l.val_score, l.test_score,
       l.layer_set = best_layer_set AS is_best, l.layer_set = last_layer_set AS is_last
FROM latest, unnest(layers) AS t(l)
"""

TABLES = ("runs", "latest", "layer_metrics", "published")
