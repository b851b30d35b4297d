"""The kdkit plugin API: every hook a plugin may implement.

A plugin is a module (or object) exposed in the ``kdkit`` entry-point group whose functions are
decorated with :data:`hookimpl`::

    # pyproject.toml of your distribution
    [project.entry-points.kdkit]
    mymethod = "kdkit_mymethod.plugin"

    # kdkit_mymethod/plugin.py
    from kdkit import hookimpl

    @hookimpl
    def register_kd_methods(register):
        register("mymethod", MyMethod, config=MyOptions, description="...")

Two families of hooks:

* **Registration hooks** (``register_*``) are called once when the registry is built. Each
  receives a ``register(name, factory, config=..., description=...)`` callback
  (``register_commands`` an ``add_command(name, run, ...)`` callback); kdkit records which
  plugin and distribution made each call, so every component knows where it came from.
* **Lifecycle hooks** (``on_*``) observe a run. They are called with keyword arguments, their
  return values are ignored, and they must not change what they are given.

Hook implementations must not give their parameters default values (pluggy versions disagree on
what that means) and may accept fewer parameters than the spec lists.

``docs/plugins.md`` is generated from the docstrings below; a test keeps the two in sync.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import pluggy

from kdkit.api import Options, RunInfo, Student

PROJECT = "kdkit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class Register(Protocol):
    """The callback handed to registration hooks.

    ``register(name, factory, config=OptionsModel, description="one line", load=..., trainable=...)``

    * ``name``: the component's name in run files (lower case, ``[a-z0-9_.-]``), unique per kind
      across all installed plugins. A name two plugins register is a *collision*: ``kdkit
      plugins`` reports both, and only runs that use the name stop until one plugin is disabled.
    * ``factory``: called as ``factory(options, context)`` with a validated instance of ``config``
      and a :class:`kdkit.api.BuildContext`; returns the component.
    * ``config``: a subclass of :class:`kdkit.api.Options` (``extra="forbid"``); defaults to
      :class:`kdkit.api.NoOptions`.
    * ``description``: one line shown by ``kdkit plugins``.
    * ``load`` (students, and teachers whose models kdkit saves; optional): called as
      ``load(directory)``, rebuilds a model the component saved and returns it as a
      :class:`kdkit.api.Student`. The model's ``save`` must write ``kdkit.json`` naming the
      component (:func:`kdkit.models.write_model_meta`); ``kdkit predict``, the engine and the study
      find this callback through the registry from that name.
    * ``trainable`` (teachers only; optional): called as ``trainable(options, context)``, returns
      the :class:`kdkit.api.Student` that ``kdkit teach`` fine-tunes for ``context.task`` (e.g. a
      pretrained encoder with a new head for the task's labels). A teacher without it that trains
      itself when built exposes ``directory`` (where it saved the model); ``kdkit teach`` copies it.
    """

    def __call__(
        self,
        name: str,
        factory: Callable[..., Any],
        *,
        config: type[Options] | None = None,
        description: str = "",
        load: Callable[[str], Student] | None = None,
        trainable: Callable[..., Student] | None = None,
    ) -> None: ...


class AddCommand(Protocol):
    """The callback handed to :func:`register_commands`.

    ``add_command(name, run, configure=None, help="one line", description="")``

    * ``name``: the sub-command, ``kdkit NAME`` (lower case, ``[a-z0-9_.-]``); it may not be a
      built-in command's name, and two plugins adding one name is a collision.
    * ``run``: called as ``run(args)`` with the parsed :class:`argparse.Namespace`; returns the
      exit status (``None`` means 0). A :class:`kdkit.errors.KdkitError` it raises is printed
      without a traceback (exit 2), like a built-in command's.
    * ``configure``: called as ``configure(parser)`` with the command's own
      :class:`argparse.ArgumentParser` to add its arguments; ``None`` for no arguments.
    * ``help``: one line shown by ``kdkit --help`` and ``kdkit plugins`` (default: the first line
      of ``run``'s docstring); ``description``: the text of ``kdkit NAME --help``.
    """

    def __call__(
        self,
        name: str,
        run: Callable[[argparse.Namespace], int | None],
        *,
        configure: Callable[[argparse.ArgumentParser], None] | None = None,
        help: str = "",
        description: str = "",
    ) -> None: ...


# ---------------------------------------------------------------------------- registration


@hookspec
def register_tasks(register: Register) -> None:
    """Register tasks.

    Each factory returns an object satisfying :class:`kdkit.api.Task`: it loads the splits
    (``train``/``validation``/``test`` with columns ``text``, ``label`` and, for pairs,
    ``text_pair``), names its labels and headline metric, and evaluates logits.

    Args:
        register: the registration callback (see :class:`Register`).
    """


@hookspec
def register_teachers(register: Register) -> None:
    """Register teachers.

    Each factory returns a :class:`kdkit.api.Teacher`: a frozen model with its tokenizer that
    returns :class:`kdkit.api.ModelOutput` for the :class:`kdkit.api.Needs` it is asked, runs in
    ``eval()`` under ``torch.no_grad()``, and has a fingerprint for the teacher cache.

    Args:
        register: the registration callback (see :class:`Register`).
    """


@hookspec
def register_students(register: Register) -> None:
    """Register students.

    Each factory returns a :class:`kdkit.api.Student` (an ``nn.Module``) with its own tokenizer,
    usually trained on ``context.splits["train"]``; it exposes per-layer outputs and can save itself.

    Args:
        register: the registration callback (see :class:`Register`).
    """


@hookspec
def register_kd_methods(register: Register) -> None:
    """Register knowledge-distillation methods.

    Each factory returns a :class:`kdkit.api.KDMethod` (an ``nn.Module``) built for the teacher and
    student described by ``context.teacher`` and ``context.student``. It declares its
    :class:`kdkit.api.Requirements` and returns named loss terms. Check it with
    ``kdkit.testing.check_kd_method``.

    Args:
        register: the registration callback (see :class:`Register`).
    """


@hookspec
def register_reporters(register: Register) -> None:
    """Register reporters.

    Each factory returns a :class:`kdkit.api.Reporter` that receives the events of the runs that
    name it under ``reporters:``.

    Args:
        register: the registration callback (see :class:`Register`).
    """


# ---------------------------------------------------------------------------- lifecycle


@hookspec
def on_run_start(run: RunInfo) -> None:
    """Observe the start of a run, after every component is built and before the first step.

    Args:
        run: the run directory, its resolved configuration and the chosen components.
    """


@hookspec
def on_step_end(run: RunInfo, step: int, record: Mapping[str, float]) -> None:
    """Observe the end of an optimisation step.

    Args:
        run: the run being observed.
        step: the number of optimisation steps done so far (1 after the first).
        record: the step's loss terms, total loss, learning rate and throughput.
    """


@hookspec
def on_eval_end(run: RunInfo, step: int, split: str, metrics: Mapping[str, float]) -> None:
    """Observe the end of an evaluation.

    Args:
        run: the run being observed.
        step: the optimisation step at which the evaluation ran.
        split: the split evaluated (``validation`` or ``test``).
        metrics: the task's metrics on that split.
    """


@hookspec
def on_run_end(run: RunInfo, summary: Mapping[str, Any]) -> None:
    """Observe the end of a run (also one stopped by an error after training began).

    Args:
        run: the run being observed.
        summary: the run summary that is written to ``summary.json``.
    """


# ---------------------------------------------------------------------------- benchmarks


@hookspec
def register_bench_ops(register: Register) -> None:
    """Register fused ops for ``kdkit bench``.

    Each factory is called with ``(options, None)`` (an op is built outside any run, so there is
    no :class:`kdkit.api.BuildContext`) and returns a :class:`kdkit.bench.BenchOp`
    describing the op's providers (Triton, eager reference, ``torch.compile``, other libraries),
    its shapes and its minimal bytes/FLOPs, so a plugin's op is measured by the same harness as
    kdkit's own.

    Args:
        register: the registration callback (see :class:`Register`).
    """


# ---------------------------------------------------------------------------- command line


@hookspec
def register_commands(add_command: AddCommand) -> None:
    """Add sub-commands to the ``kdkit`` command line.

    Call ``add_command(name, run, configure=..., help=...)`` once per command (see
    :class:`AddCommand`); kdkit creates the command's parser, so a plugin never touches
    argparse's sub-parser internals. The built-in commands (``run``, ``plugins``, ...) cannot be
    replaced. A command whose registration or ``configure`` fails is reported by
    ``kdkit plugins`` like any plugin failure, and ``kdkit NAME`` then says why it is missing.
    ``KDKIT_DISABLE_PLUGINS`` removes a plugin's commands with the rest of it.

    Args:
        add_command: the command callback (see :class:`AddCommand`).
    """
