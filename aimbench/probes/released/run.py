"""Released heads (``--probe official``, e.g. AIM's attentive heads) applied as published: nothing
is trained or selected; val and test are scored on the head's own layer window."""

from __future__ import annotations

import torch

from aimbench.adapters.weights import load_source
from aimbench.errors import UserError
from aimbench.probes.attentive.head import head_from_state_dict
from aimbench.probes.attentive.training import head_predictions
from aimbench.probes.job import ProbeJob, ProbeOutcome
from aimbench.probes.kinds import OFFICIAL
from aimbench.probes.metrics import score_predictions, secondary_scores
from aimbench.probes.results import LayerResult, ProbeResult, as_predictions
from aimbench.probes.timing import Timing


def run_released(job: ProbeJob) -> ProbeOutcome:
    backbone, task, splits, head_name = job.backbone, job.task, job.splits, job.layers
    official = backbone.spec.official_probes[head_name]
    state, info, path = load_source(official.weights, backbone.spec.card_path.parent, official.sha256)
    head = head_from_state_dict(state, backbone.heads, str(path))
    if head.linear.out_features != task.num_classes:
        raise UserError(
            f"head '{head_name}' of {backbone.spec.name} has {head.linear.out_features} classes, task '{task.name}' has {task.num_classes}"
        )
    [layer_set] = job.layer_sets  # the head's window, e.g. last=avg:18-23
    scores, extra, timing = {}, {}, Timing()
    for name in ("val", "test"):  # nothing is extracted apart or trained: each split's forwards and head are its evaluation
        images = getattr(splits, name)
        advance = job.progress(f"released head {head_name} on {name}", len(images))
        with timing.evaluating(), timing.forwards(backbone):
            predictions = head_predictions(backbone, [head], [layer_set], images, job.batch_size, job.workers, advance, split=name)
        labels = torch.as_tensor(images.labels, dtype=torch.int64)
        scores[name] = float(score_predictions(predictions, labels, task.metric, task.num_classes)[0])
        if name == "test":  # secondary metrics are reported for test only; selection never reads them
            extra = secondary_scores(predictions, labels, task.secondary_metrics, task.num_classes)[0]
    result = LayerResult(layer_set=layer_set.name, blocks=official.layers, token="attentive", hparams=None, val_score=scores["val"],
                         test_score=scores["test"], test_secondary=extra, test_predictions=as_predictions(predictions))  # fmt: skip
    config = {
        "kind": OFFICIAL, "head": head_name, "head_weights_id": info.id, "head_sha256": info.sha256,
        "window": list(official.layers), "training": "none: the released head is evaluated as is", "selection": "none",
    }  # fmt: skip
    return ProbeOutcome(ProbeResult(heads=[], layers=[result], best=result, last=result), config, timing)
