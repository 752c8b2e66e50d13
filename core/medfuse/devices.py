"""Which accelerators TensorFlow sees, for study profiles that ask for one (``requires = "gpu"``).

TensorFlow is imported only when a profile needs the answer, so the command line starts fast.
"""

from __future__ import annotations

from typing import Any

from .errors import MedfuseError


def visible_gpus() -> list[str]:
    """The GPUs TensorFlow sees (``tf.config.list_physical_devices("GPU")``), by name; empty without one."""
    import tensorflow as tf

    return [d.name for d in tf.config.list_physical_devices("GPU")]


def check_profile_devices(study: Any, allow_cpu: bool = False) -> dict[str, Any] | None:
    """Before any data is loaded: refuse ``study``'s applied profile when it requires a GPU that
    TensorFlow does not see (unless ``allow_cpu``). Returns what a run records of the profile
    (:meth:`~medfuse.study.ProfileSpec.record` with the GPUs seen and ``allow_cpu``), or ``None``
    when no profile is applied."""
    profile = study.profile
    if profile is None:
        return None
    record = profile.record()
    if profile.requires == "gpu":
        gpus = visible_gpus()
        if not gpus and not allow_cpu:
            raise MedfuseError(
                f"profile {profile.name!r} of study {study.name!r} requires a GPU, and TensorFlow sees none "
                "(tf.config.list_physical_devices('GPU') is empty): its larger recipes would take hours on a "
                "CPU. Run without --profile for the study as written (the reported CPU figures), or add "
                "--allow-cpu to run the profile on the CPU anyway.")
        record.update(gpus=gpus, allow_cpu=allow_cpu)
    return record
