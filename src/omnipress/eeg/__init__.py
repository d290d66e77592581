"""RAICL: EEG seizure detection with a vision-language model and retrieved few-shot examples.

Li, Wang, Gui et al., "RAICL: Retrieval-Augmented In-Context Learning for Vision-Language-Model Based EEG Seizure
Detection", arXiv:2601.17844 (2026). EEG windows are drawn as stacked-waveform images of the 18-channel double
banana and a VLM is asked SEIZURE / NON-SEIZURE with two same-patient background and two cross-patient seizure
examples chosen by retrieval.

Data side: `read_recording` (EDF/BDF via MNE; a file shorter than its header declares raises
`TruncatedRecordingError` unless ``allow_truncated=True``) -> `bipolar_montage` -> `preprocess` -> `make_windows`, or
all of it for a cohort with `prepare`; annotation readers in `omnipress.eeg.annotations`; a synthetic cohort with
`write_cohort`; the official code's ready-made windows (``X.npy``, ``y.npy``, subject counts) with
`import_official`; `signal_features` and the `leave_one_patient_out` classical baselines. Model side (rendering,
embeddings, retrieval, prompts, backends, runs, scoring) lives in the sibling modules of this package.

Install with ``pip install 'omnipress[eeg]'``. Nothing heavy (MNE, matplotlib, scikit-learn) is imported until a
name below is used; the package does not need the compression parts of omnipress.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY: dict[str, str] = {
    # io
    "Recording": "io",
    "read_recording": "io",
    "Truncation": "io",
    "TruncatedRecordingError": "io",
    "TruncatedRecordingWarning": "io",
    # annotations
    "SeizureTable": "annotations",
    "load_annotations": "annotations",
    "read_annotations": "annotations",
    "read_chbmit_summary": "annotations",
    "read_tusz_csv": "annotations",
    "read_helsinki_csv": "annotations",
    "read_plain_csv": "annotations",
    # montage / preprocessing / windows
    "DOUBLE_BANANA": "montage",
    "bipolar_montage": "montage",
    "preprocess": "preprocess",
    "WindowSet": "windows",
    "make_windows": "windows",
    # cohort
    "PrepareResult": "prepare",
    "prepare": "prepare",
    "write_cohort": "synth",
    "read_manifest": "synth",
    # the official code's data format (X.npy, y.npy, subject counts)
    "OfficialCohort": "official",
    "import_arrays": "official",
    "import_official": "official",
    # features and baselines
    "FEATURE_NAMES": "features",
    "signal_features": "features",
    "BaselineResult": "baselines",
    "leave_one_patient_out": "baselines",
    # model side: rendering, embeddings, retrieval, prompts, runs, scoring
    "RenderConfig": "render",
    "Renderer": "render",
    "ImageStore": "render",
    "render_windows": "render",
    "Embedder": "embed",
    "SignalFeatureEmbedder": "embed",
    "CLIPImageEmbedder": "embed",
    "EmbeddingIndex": "embed",
    "make_embedder": "embed",
    "build_index": "embed",
    "Retriever": "retrieve",
    "Selection": "retrieve",
    "Prompt": "prompts",
    "Decision": "prompts",
    "build_prompt": "prompts",
    "parse_decision": "prompts",
    "parse_official": "prompts",
    "knn_vote": "knn",
    "RunConfig": "run",
    "RunSummary": "run",
    "select_queries": "run",
    "ScoreReport": "score",
    "score_rows": "score",
    "score_run": "score",
    "reparse": "score",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    if not name.startswith("_"):  # a submodule, e.g. omnipress.eeg.render
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
