"""Scoring generated images the course's way: one place to reach the evaluation stage (notebook 06).

The work is done by four modules, gathered here under their own names:

- :mod:`labkit.metrics`: the course accuracy (top-k hits over objects), per object, per object count, failures;
- :mod:`labkit.judge`: the evaluator network, its checkpoint format, :class:`Judge`, the course's
  ``evaluator.py`` as a drop-in, the cached synthetic judge;
- :mod:`labkit.judge_training`: training the synthetic judge, and :func:`load_judge` (the course checkpoint
  when present, else the synthetic judge, trained first when needed);
- :mod:`labkit.outputs`: the required files of a run (``outputs/<run name>/``) and handing them in.
"""

from __future__ import annotations

from labkit.judge import (  # noqa: F401
    COURSE_JUDGE,
    OFFICIAL_IMAGES_JUDGE,
    SYNTHETIC_JUDGE,
    EvaluatorFileError,
    Judge,
    WeakJudgeWarning,
    build_evaluator_network,
    course_evaluation_model,
    course_files,
    import_course_evaluator,
    judge_paths,
    load_cached_synthetic_judge,
    load_course_judge,
    load_shipped_judge,
    load_network_state,
    read_checkpoint,
    to_evaluator_input,
)
from labkit.judge_training import load_judge, load_synthetic_judge, train_synthetic_judge  # noqa: F401
from labkit.metrics import (  # noqa: F401
    NUM_CLASSES,
    AccuracyResult,
    FailureCase,
    course_accuracy,
    failure_cases,
    per_class_accuracy,
    per_object_count_accuracy,
    top_k_selection,
)
from labkit.outputs import hand_in, read_output_images, save_required_outputs, write_accuracy_summary  # noqa: F401
