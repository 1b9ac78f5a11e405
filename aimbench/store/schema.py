"""The results schema in one place: record columns with their DuckDB types, and the views.

Every report, export and ``--sql`` query sees these relations (one in-memory DuckDB session
per command, built by ``aimbench.store.db.connect``):

``runs``
    one row per record file of a readable schema version (``READABLE_VERSIONS``), every column of
    ``RECORD_COLUMNS`` plus ``file`` (the record's file name). Version-2 records are upgraded as
    they are read (``RUNS_SQL``): no weights override unless their weights came from a file, and
    protocol ``legacy`` (the probe defaults of aimbench before protocol cards). Fields a record
    lacks read as null (``timing`` in records written before it was kept). Records of other
    versions are counted and left out.
``latest``
    the newest record per identity (``IDENTITY_COLUMNS``: backbone, weights, task, probe,
    protocol, layer spec, image limit, dtype, seed): re-running a cell, or running it again after
    a card was corrected, never duplicates it in a report, and runs with other weights, limits or
    layers never replace each other.
``layer_metrics``
    ``latest`` unnested to one row per (cell, layer set): the identity columns, ``weights_name,
    cell_key, metric, created_at, layer_set, blocks, layer, token, hparams, val_score,
    test_score, is_best, is_last, test_low, test_high, n_test``. ``is_best`` and ``is_last`` are
    the record's stored choices (made once, when the cell finished): every view marks the same
    layer sets. ``test_low`` and ``test_high`` bound the 95 % bootstrap interval on ``test_score``
    (null for records before version 5); ``n_test`` is the number of test examples. The layer
    curve is this view ordered by ``layer``.
``published``
    numbers printed in papers (``results/published/*.csv``), one row per (model, layer, task):
    ``source, reference, model, arch, pretrain_data, backbone`` (the aimbench card it matches,
    empty when none), ``probe, layer`` (``last``, ``best`` or a block number as printed),
    ``task, metric, score`` (a fraction, like measured scores), ``blocks`` (``A-B`` where the paper
    names a layer number; empty: the card's window named by ``layer``), ``position`` (row order in
    the files).

Scores are fractions in [0, 1] of the task's metric; blocks are 0-indexed (the paper's
layer numbers are kept as printed in ``published.layer``).
"""

from __future__ import annotations

from aimbench.identity import IDENTITY_COLUMNS

SCHEMA_VERSION = 5
# 2 lacks weights_key, weights_name and protocol: RUNS_SQL fills them in; 4 adds record_sha256 (store.records);
# 5 adds test intervals (layers[].test_interval, best_/last_test_interval, interval) and the predictions sidecar
READABLE_VERSIONS = (2, 3, 4, 5)

# A layer set's scores: one block or a window of blocks averaged (aimbench.probes.features.layer_sets).
_LAYER = (
    "STRUCT(layer_set VARCHAR, blocks INTEGER[], layer INTEGER, token VARCHAR, hparams JSON, "
    "val_score DOUBLE, test_score DOUBLE, test_secondary JSON, test_interval STRUCT(low DOUBLE, high DOUBLE))"
)

_INTERVAL = "STRUCT(low DOUBLE, high DOUBLE)"

# Every field a version-2 record may carry, with the type DuckDB reads it as. Free-form
# dictionaries are JSON so that records of different probes (lr/wd vs k) share one table.
RECORD_COLUMNS: dict[str, str] = {
    # identity
    "schema_version": "INTEGER",
    "record_id": "VARCHAR",  # uuid4 hex
    "created_at": "TIMESTAMPTZ",  # when the record was written; the views show it as a UTC TIMESTAMP
    "cell_key": "VARCHAR",  # backbone[@weights name]|task|probe|seed[|limit=N][|dtype][|layers=SPEC] (launch.cells)
    "record_sha256": "VARCHAR",  # checksum of the record's text without this field (store.records); from version 4
    "config_hash": "VARCHAR",  # hash of everything that defines the cell (cards, weights, layers, limit, probe, seed)
    "backbone": "VARCHAR",
    "task": "VARCHAR",
    "probe": "VARCHAR",  # linear | attentive | knn | official:last | official:best
    "protocol": "VARCHAR",  # the protocol card the recipe came from, + fields an explicit option changed ("aim-v1+epochs=5"); "" for released heads
    "seed": "INTEGER",
    # what was measured on
    "weights_key": "VARCHAR",  # "" = the card's weights; random | timm | open_clip:TAG | hub source | sha256:<file content>
    "weights_name": "VARCHAR",  # what reports call a weights override ("" = the card's); --name, else from the file or run folder
    "weights_id": "VARCHAR",
    "weights_sha256": "VARCHAR",  # of the loaded state dict
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
            ("test_interval", _INTERVAL),  # 95 % bootstrap interval on test_score, same units; from version 5
        )
    },
    "layers": f"{_LAYER}[]",  # per layer set, the head selected on val
    # how the intervals were drawn (aimbench.stats.intervals): method (bootstrap-percentile), level (0.95), resamples, seed
    "interval": "STRUCT(method VARCHAR, level DOUBLE, resamples INTEGER, seed BIGINT)",
    # the per-example test predictions beside the record (store.predictions): file name, sha256 of its bytes, size
    "predictions": "STRUCT(file VARCHAR, sha256 VARCHAR, bytes BIGINT)",
    "heads": "JSON",  # every trained head with its val score (never a test score); stopped_at: where successive halving stopped it
    # how
    "probe_config": "JSON",  # resolved recipe (grid, epochs, batch, ...) + "protocol": each field's value, source, origin
    "backbone_info": "JSON",  # family, adapter, arch, depth, dim, card, licence, preprocess, features
    "task_info": "JSON",  # num_classes, metric, card
    "environment": "JSON",  # aimbench version, git sha, torch, python, device
    # where the time went, in seconds (null in records written before it): load_s (cards, data, backbone);
    # extraction_s over the eval-crop features or token maps of every split, extraction_images through the
    # backbone (0: every split came from the feature cache) and extraction_images_per_s (null then), per split in
    # extraction_splits {split: {s, images}}; heads_s training (online modes: with the augmented views'
    # backbone forwards); evaluation_s scoring val and test (kNN: its whole neighbour search; released heads:
    # their forwards); backbone_forward_s, of heads_s + evaluation_s, the time inside backbone forwards (online
    # modes and released heads; null where none ran there); total_s = wall_time_s; the rest is setup between
    "timing": "JSON",
    "wall_time_s": "DOUBLE",
}

# What every report needs of a record: one lacking any (a hand edit, a foreign JSON file in runs/)
# is left out of ``runs`` with a warning (store.db), as a record failing its checksum is.
REQUIRED_COLUMNS = ("record_id", "created_at", "cell_key", "backbone", "task", "probe", "seed", "metric")
INCOMPLETE_SQL = " OR ".join(f'"{name}" IS NULL' for name in REQUIRED_COLUMNS)

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
    "blocks": "VARCHAR",  # 0-indexed blocks A-B the number was measured on; empty: the card's window named by layer
}

LEGACY_PROTOCOL = "legacy"  # version-2 records: trained with aimbench's built-in defaults of that time

RUNS_SQL = f"""
CREATE VIEW runs AS SELECT * REPLACE (
    timezone('UTC', created_at) AS created_at,
    coalesce(weights_key, CASE WHEN starts_with(weights_id, 'file:') THEN 'sha256:' || weights_sha256 ELSE '' END) AS weights_key,
    coalesce(weights_name, CASE WHEN starts_with(weights_id, 'file:')
                                THEN regexp_replace(weights_id[6:], '\\.[A-Za-z]+$', '') ELSE '' END) AS weights_name,
    CASE WHEN schema_version = 2 THEN '{LEGACY_PROTOCOL}' ELSE coalesce(protocol, '') END AS protocol
) FROM all_records WHERE schema_version IN {READABLE_VERSIONS} AND NOT ({INCOMPLETE_SQL})
"""

LATEST_SQL = f"""
CREATE VIEW latest AS SELECT * FROM runs
QUALIFY row_number() OVER (PARTITION BY {", ".join(IDENTITY_COLUMNS)} ORDER BY created_at DESC, record_id) = 1
"""

LAYER_METRICS_SQL = f"""
CREATE VIEW layer_metrics AS
SELECT {", ".join(IDENTITY_COLUMNS)}, weights_name, cell_key, metric, created_at,
       l.layer_set, l.blocks, l.layer, l.token, l.hparams, l.val_score, l.test_score,
       l.layer_set = best_layer_set AS is_best, l.layer_set = last_layer_set AS is_last,
       l.test_interval.low AS test_low, l.test_interval.high AS test_high, n_test
FROM latest, unnest(layers) AS t(l)
"""

TABLES = ("runs", "latest", "layer_metrics", "published")
