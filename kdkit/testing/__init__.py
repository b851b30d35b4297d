"""``kdkit.testing``: fixtures and conformance checks for plugin authors.

Installed as a pytest plugin (entry point ``pytest11``), so these fixtures are available in any
test suite once kdkit is installed:

* ``kdkit_tiny_task`` — a :class:`~kdkit.testing.tiny.TinyTask` over real stdlib functions;
* ``kdkit_tiny_teacher`` / ``kdkit_tiny_student`` — tiny CPU models with different tokenizers;
* ``kdkit_tiny_batch`` — a :class:`kdkit.api.Batch` of 6 functions tokenised by both;
* ``kdkit_plugins`` — the plugins of the installed distributions, loaded fresh.

Conformance checks (call one per component in a test): :func:`check_kd_method`,
:func:`check_task`, :func:`check_teacher`, :func:`check_student`, :func:`check_reporter`,
:func:`check_bench_op`, :func:`check_hookimpls`, :func:`check_options_roundtrip`.
"""

from kdkit.testing.bench_check import BenchOpReport, check_bench_op
from kdkit.testing.checks import (
    MethodReport,
    check_hookimpls,
    check_kd_method,
    check_options_roundtrip,
    check_student,
    check_task,
    check_teacher,
)
from kdkit.testing.reporter_check import check_reporter
from kdkit.testing.tiny import TinyStudent, TinyTask, TinyTeacher, tiny_batch, tiny_examples

__all__ = [
    "BenchOpReport",
    "MethodReport",
    "TinyStudent",
    "TinyTask",
    "TinyTeacher",
    "check_bench_op",
    "check_hookimpls",
    "check_kd_method",
    "check_options_roundtrip",
    "check_reporter",
    "check_student",
    "check_task",
    "check_teacher",
    "tiny_batch",
    "tiny_examples",
]
