"""Every registered model kind declares what the pipelines ask of it (zero-shot, several datasets),
and the pipelines' checks read those declarations, not kind names."""

from __future__ import annotations

import pytest

from components.config import ConfigError
from components.model import MODEL_KINDS, model_kind, zero_shot_kinds
from components.model_config import MODEL_CONFIGS
from components.model_kind import ModelKind, register_model_kind


@pytest.mark.parametrize("name", sorted(MODEL_KINDS))
def test_every_model_kind_declares_its_abilities(name):
    cls = MODEL_KINDS[name]
    assert isinstance(cls.zero_shot, bool) and isinstance(cls.multi_dataset, bool)
    if cls.zero_shot:  # what zeroshot / predict --classes call
        assert callable(getattr(cls, "zero_shot_logits", None))
    if cls.with_datasets:  # the kind data.datasets turns it into trains several heads
        assert MODEL_KINDS[cls.with_datasets].multi_dataset
    assert cls.config_cls.__dataclass_fields__["kind"].default == name or name == "classifier"


def test_unknown_kind_is_one_line_naming_the_key():
    with pytest.raises(ConfigError, match=r"model.kind: unknown 'nope'; known: \["):
        model_kind("nope")


def test_a_new_zero_shot_kind_is_accepted_by_the_pipeline_checks():
    """The zero-shot checks (zeroshot.manifest, predict --classes) follow the declaration."""
    from types import SimpleNamespace

    from pipelines.infer.predict_core import check_open_vocabulary

    class Captioner(ModelKind):
        zero_shot = True

        def zero_shot_logits(self, *a, **k):  # pragma: no cover - never built here
            raise NotImplementedError

    run = SimpleNamespace(cfg=SimpleNamespace(model=SimpleNamespace(kind="captioner_test")))
    with pytest.raises(ConfigError, match="model.kind: unknown 'captioner_test'"):
        check_open_vocabulary(run, classes=True)
    try:
        register_model_kind("captioner_test", Captioner)
        assert "captioner_test" in zero_shot_kinds()
        check_open_vocabulary(run, classes=True)  # accepted: it declares zero_shot
    finally:
        MODEL_KINDS.pop("captioner_test")
        MODEL_CONFIGS.pop("captioner_test")
    run.cfg.model.kind = "classifier"
    with pytest.raises(ConfigError, match="--classes needs a run with a text tower"):
        check_open_vocabulary(run, classes=True)
