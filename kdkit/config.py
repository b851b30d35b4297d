"""Run configuration: one YAML file (``yaml.safe_load`` only, bounded: :mod:`kdkit.safe_yaml`)
validated in two phases, then checked against this machine.

Phase 1 checks the skeleton (top-level keys, training/cache/kernels settings, that each component
section names a component). Phase 2 resolves each name in the registry and validates the section's
remaining keys against that component's own options model. Every problem of both phases is
collected and reported together, each with ``file:line``, the dotted path, what is wrong and a
suggestion (:class:`kdkit.errors.ConfigError`). Once both pass, :mod:`kdkit.config_checks` checks
what only this machine can tell before any work starts: that ``output_dir`` and the cache can be
created and written, and that ``max_length`` fits the models' position tables.

A component section is a mapping with ``name`` and the component's options side by side::

    method:
      name: kd
      temperature: 10

or just the name (``method: kd``) to take every default.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kdkit import safe_yaml
from kdkit.api import Options
from kdkit.errors import ConfigError, KdkitError, Problem, shorten
from kdkit.registry import Component, Registry

#: Component sections of a run file and the registry kind of each.
COMPONENT_SECTIONS: dict[str, str] = {
    "task": "task",
    "teacher": "teacher",
    "student": "student",
    "method": "kd_method",
}


class ComponentSection(BaseModel):
    """Phase-1 view of a component section: a ``name`` and not-yet-validated options."""

    model_config = ConfigDict(extra="allow")
    name: str


#: Longest ``max_length`` any run may ask for (ModernBERT's 8,192-token context, the longest of
#: the code encoders kdkit targets); a teacher with a smaller position table lowers it further.
MAX_LENGTH_CAP = 8192
#: Most epochs a run (or a teacher's fine-tuning) may ask for; use max_steps to bound by steps.
MAX_EPOCHS = 10_000
#: Most torch CPU threads a run may ask for.
MAX_THREADS = 1024
#: Seeds are 0 <= seed < 2**63 (torch seeds are 64-bit; derived seeds add small offsets).
SEED_LIMIT = 2**63


def seed_field(default: int = 0, description: str | None = None) -> Any:
    """A seed option: an integer 0 <= seed < 2**63 (what every random generator can take)."""
    return Field(default, ge=0, lt=SEED_LIMIT, description=description)


class TrainingConfig(Options):
    """How the student is trained (the study's defaults where it gives them)."""

    epochs: int = Field(
        5, ge=1, le=MAX_EPOCHS, description="passes over the training split (at most 10,000)"
    )
    max_steps: int | None = Field(None, ge=1, description="stop after this many steps")
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int | None = Field(None, ge=1, description="defaults to 2 x batch_size")
    lr: float = Field(3e-4, gt=0, description="peak learning rate of AdamW")
    weight_decay: float = Field(0.0, ge=0)
    adam_eps: float = Field(1e-8, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="linear warm-up share of steps")
    max_grad_norm: float | None = Field(1.0, gt=0, description="gradient clipping; null = off")
    max_length: int = Field(
        512,
        ge=8,
        le=MAX_LENGTH_CAP,
        description="tokens per example for both tokenizers (at most 8,192, and at most what "
        "the teacher's position table holds)",
    )
    eval_every: int | None = Field(None, ge=1, description="evaluate every N steps; null = epoch")
    early_stopping_patience: int | None = Field(None, ge=1, description="evaluations without gain")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    device: str = Field("auto", description="'auto', 'cpu', 'cuda', 'cuda:1', ...")
    num_threads: int | None = Field(
        None, ge=1, le=MAX_THREADS, description="torch CPU threads (at most 1,024)"
    )
    log_every: int = Field(10, ge=1)
    save_every: int | None = Field(
        None, ge=1, description="also checkpoint every N steps (always at evaluations and epochs)"
    )
    distributed: Literal["auto", "none", "ddp", "fsdp"] = Field(
        "auto",
        description="data-parallel training across the processes a launcher (torchrun) started: "
        "auto = DDP when WORLD_SIZE > 1, else one process; batch_size is the global batch "
        "(docs/distributed.md)",
    )
    baselines: bool = Field(
        True,
        description="compute the task's majority / stratified / lexical baselines (cached with "
        "the data) and report them beside the scores (docs/baselines.md); false = skip them",
    )


class CacheConfig(Options):
    """Teacher-output, tokenizer and dataset caches."""

    enabled: bool = True
    dir: str | None = Field(None, description="default: $KDKIT_CACHE or ~/.cache/kdkit")
    teacher_outputs: str | None = Field(
        None,
        description="use (or build) the teacher-output cache in this directory instead of the "
        "automatic key; a cache of another teacher or data is refused",
    )
    token_states: Literal["bf16", "fp16", "int8", "fp32", "off"] = Field(
        "bf16",
        description="how the teacher's token states are cached for methods that need them "
        "(CKD, fitnets features: tokens): bf16, fp16, int8 (per-token scale) or fp32; off "
        "runs the teacher live on every batch instead (docs/caching.md)",
    )
    logits: Literal["full", "topk"] = Field(
        "full",
        description="how the teacher-output cache stores logits: full [N, C], or topk (the "
        "teacher's top-k log-probabilities + indices + tail mass, docs/caching.md)",
    )
    k: int = Field(64, ge=1, description="entries per row of a topk logits cache (k >= C: all)")
    topk_temperature: float = Field(
        1.0,
        gt=0,
        description="temperature T0 the top-k log-probabilities are taken at (rescaled to the "
        "method's T; exact when T = T0 or k >= C)",
    )
    teacher_import: str | None = Field(
        None,
        description="train from teacher outputs imported with `kdkit cache import --name NAME` "
        "(the import's NAME); the run then needs no teacher section",
    )


class KernelsConfig(Options):
    """Which implementation of the fused losses runs (see docs/kernels.md)."""

    impl: Literal["auto", "reference", "triton"] = "auto"


class RunConfig(Options):
    """Phase-1 schema of a run file."""

    seed: int = seed_field(0, "seeds data order, initial weights and dropout (0 <= seed < 2**63)")
    output_dir: str = Field(
        "runs/{task}-{method}-{student}-seed{seed}",
        description="the run directory; may use {task}, {method}, {student}, {teacher}, {seed}",
    )
    task: ComponentSection
    teacher: ComponentSection | None = None
    student: ComponentSection
    method: ComponentSection
    training: TrainingConfig = TrainingConfig()
    cache: CacheConfig = CacheConfig()
    kernels: KernelsConfig = KernelsConfig()
    reporters: list[ComponentSection] = Field(
        default_factory=lambda: [ComponentSection(name="console"), ComponentSection(name="jsonl")]
    )

    @field_validator("task", "teacher", "student", "method", mode="before")
    @classmethod
    def _name_shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("output_dir")
    @classmethod
    def _output_dir_placeholders(cls, value: str) -> str:
        from kdkit.config_checks import check_output_dir_template

        check_output_dir_template(value)
        return value

    @field_validator("reporters", mode="before")
    @classmethod
    def _reporter_shorthand(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value


@dataclass
class ResolvedComponent:
    """A component section after phase 2: the registered component and validated options."""

    component: Component
    options: Options

    def as_dict(self) -> dict[str, Any]:
        """``{"name": ..., **options}`` with every default filled in."""
        return {"name": self.component.name, **self.options.model_dump(mode="json")}


@dataclass
class ResolvedConfig:
    """A fully validated run configuration."""

    run: RunConfig
    components: dict[str, ResolvedComponent]
    reporters: list[ResolvedComponent]
    source: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The resolved configuration, defaults included, as plain data."""
        out = self.run.model_dump(
            mode="json", exclude={"teacher", "reporters", *COMPONENT_SECTIONS}
        )
        for section, resolved in self.components.items():
            out[section] = resolved.as_dict()
        out.setdefault("teacher", None)
        out["reporters"] = [r.as_dict() for r in self.reporters]
        order = [
            "seed",
            "output_dir",
            "task",
            "teacher",
            "student",
            "method",
            "training",
            "cache",
            "kernels",
            "reporters",
        ]
        return {k: out[k] for k in order if k in out}

    def to_yaml(self) -> str:
        """The resolved configuration as YAML (what ``kdkit config show`` prints)."""
        return yaml.safe_dump(self.as_dict(), sort_keys=False)

    def output_dir(self) -> Path:
        """The run directory with ``{task}``, ``{method}``, ``{student}``, ``{seed}`` filled in."""
        names = {s: r.component.name for s, r in self.components.items()}
        return Path(
            self.run.output_dir.format(
                task=names["task"],
                method=names["method"],
                student=names["student"],
                teacher=names.get("teacher", "none"),
                seed=self.run.seed,
            )
        )


# ----------------------------------------------------------------------------- YAML + lines


def _line_index(node: yaml.Node | None, prefix: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], int]:
    """Map each path in the YAML document to the (1-based) line of its key or item."""
    lines: dict[tuple[Any, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = (*prefix, key.value)
            lines[path] = key.start_mark.line + 1
            lines.update(_line_index(value, path))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            path = (*prefix, i)  # (mypy reads a starred tuple in [] as 3.11-only syntax)
            lines[path] = item.start_mark.line + 1
            lines.update(_line_index(item, path))
    return lines


@dataclass
class Document:
    """Parsed YAML data with the line of every key, and which paths came from ``--set``."""

    data: dict[str, Any]
    filename: str | None
    lines: dict[tuple[Any, ...], int] = field(default_factory=dict)
    overridden: set[tuple[Any, ...]] = field(default_factory=set)

    def line(self, path: Iterable[Any]) -> int | None:
        """The line of ``path`` or of its closest ancestor present in the file."""
        p = tuple(path)
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return None

    def origin(self, path: Iterable[Any]) -> tuple[str | None, int | None]:
        """(filename or '--set', line) of a path."""
        p = tuple(path)
        for i in range(len(p), 0, -1):
            if p[:i] in self.overridden:
                return "--set", None
        return self.filename, self.line(p)


def parse_yaml(text: str, filename: str | None = None) -> Document:
    """Parse a run file with ``yaml.safe_load`` within :mod:`kdkit.safe_yaml`'s limits (size,
    nesting, aliases, no duplicate keys); every problem becomes a :class:`ConfigError`."""
    try:
        # the node tree (no objects yet) gives the line numbers; the data is built from it
        node = safe_yaml.compose(text)
        data = safe_yaml.load_node(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = shorten(getattr(exc, "problem", None) or str(exc), 200)
        limit = isinstance(exc, safe_yaml.YamlLimitError)  # a kdkit limit, not a syntax error
        raise ConfigError(
            [
                Problem(
                    "",
                    f"{'refused' if limit else 'not valid YAML'}: {problem}",
                    line=mark.line + 1 if mark else None,
                    suggestion=exc.fix
                    if isinstance(exc, safe_yaml.YamlLimitError)
                    else "check indentation and that every 'key: value' has a space after "
                    "the colon",
                )
            ],
            filename,
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            [
                Problem(
                    "",
                    f"the file must be a mapping of settings, not a {type(data).__name__}",
                    line=1,
                    suggestion="start from `kdkit config show` of the default run",
                )
            ],
            filename,
        )
    return Document(data, filename, _line_index(node))


def load_document(path: str | Path) -> Document:
    """Read and parse a run file, with a clear error when it is missing or unreadable."""
    p = Path(path)
    if not p.is_file():
        raise KdkitError(
            f"configuration file not found: {p}",
            fix="check the path; `kdkit config show` prints the default run file to start from",
        )
    try:
        size = p.stat().st_size
        if size > safe_yaml.MAX_BYTES:  # refused before reading: a 50 MB file is no run file
            raise KdkitError(
                f"the file is {size:,} bytes; a kdkit YAML file may hold at most "
                f"{safe_yaml.MAX_BYTES:,}",
                where=str(p),
                fix="check that this is the run file you meant (run files are a few KB)",
            )
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KdkitError(f"cannot read {p}: {exc}", fix="save the file as UTF-8 text") from None
    return parse_yaml(text, str(p))


def default_document() -> Document:
    """The embedded default run (works offline on a fresh machine)."""
    text = resources.files("kdkit").joinpath("default_run.yaml").read_text(encoding="utf-8")
    return parse_yaml(text, "<default run>")


def apply_overrides(doc: Document, overrides: Iterable[str]) -> Document:
    """Apply ``a.b=value`` overrides (values parsed as YAML scalars/flow collections)."""
    problems: list[Problem] = []
    for item in overrides:
        if "=" not in item:
            problems.append(
                Problem(
                    item,
                    "an override must look like key.path=value",
                    suggestion="e.g. --set method.temperature=4",
                )
            )
            continue
        key, raw = item.split("=", 1)
        try:
            value = safe_yaml.load(raw) if raw.strip() else ""
        except safe_yaml.YamlLimitError as exc:
            problems.append(Problem(shorten(key), f"the value cannot be used: {exc.problem}"))
            continue
        except yaml.YAMLError:
            value = raw
        parts: list[Any] = [int(p) if p.isdigit() else p for p in key.strip().split(".")]
        if len(parts) == 2 and parts[0] in COMPONENT_SECTIONS and parts[1] == "name":
            # Switching component: the old one's options mean nothing to the new one, so the
            # section starts from the new component's defaults (later --set may add options).
            old = doc.data.get(parts[0])
            old_name = old.get("name") if isinstance(old, dict) else old
            if old_name != value:
                doc.data[parts[0]] = {"name": value}
                doc.overridden.add((parts[0],))
                continue
        target: Any = doc.data
        ok = True
        for i, part in enumerate(parts[:-1]):
            nxt = target[part] if _has(target, part) else None
            if isinstance(nxt, str) and parts[i] in COMPONENT_SECTIONS:
                nxt = {"name": nxt}  # `method: kd` then --set method.temperature=4
                target[part] = nxt
            if nxt is None:
                if isinstance(target, dict):
                    nxt = target[part] = {}
                else:
                    ok = False
                    break
            target = nxt
        if not ok or not isinstance(target, (dict, list)):
            problems.append(Problem(key, "cannot set this path", suggestion="check the key path"))
            continue
        if isinstance(target, list):
            if not isinstance(parts[-1], int) or parts[-1] > len(target):
                problems.append(Problem(key, "list index out of range"))
                continue
            if parts[-1] == len(target):
                target.append(value)
            else:
                target[parts[-1]] = value
        else:
            target[parts[-1]] = value
        doc.overridden.add(tuple(parts))
    if problems:
        raise ConfigError(problems, "--set")
    return doc


def _has(container: Any, key: Any) -> bool:
    if isinstance(container, dict):
        return key in container
    return isinstance(container, list) and isinstance(key, int) and key < len(container)


# ----------------------------------------------------------------------------- validation


def _suggest(word: object, choices: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def _model_fields(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


def _problems_from_validation(
    exc: ValidationError,
    doc: Document,
    prefix: tuple[Any, ...],
    model: type[BaseModel],
    owner: str,
) -> list[Problem]:
    """Turn pydantic errors into located problems with suggestions."""
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        path = (*prefix, *loc)
        filename, line = doc.origin(path)
        dotted = ".".join(str(p) for p in path)
        suggestion = None
        if err["type"] == "extra_forbidden":
            sub = _submodel(model, loc[:-1])
            accepted = _model_fields(sub) if sub else []
            guess = _suggest(loc[-1], accepted)
            # a component's own options name the component; a nested run-file section names itself
            who = ".".join(map(str, loc[:-1])) if not prefix and len(loc) > 1 else owner
            message = f"unknown option ({who} accepts: {', '.join(accepted) or 'no options'})"
            if guess:
                suggestion = f"did you mean '{guess}'?"
        elif err["type"] == "missing":
            message = "required setting is missing"
            suggestion = (
                f"add '{loc[-1]}:' under '{'.'.join(map(str, path[:-1])) or 'the top level'}'"
            )
        else:
            value = shorten(err.get("input"))
            # a validator's own ValueError already says what it got and what to write
            msg = err["msg"].removeprefix("Value error, ")
            message = msg if err["type"] == "value_error" else f"{msg} (got {value!r})"
            sub = _submodel(model, loc[:-1])
            fld = sub.model_fields.get(str(loc[-1])) if sub else None
            if fld is not None:
                hint = fld.description or ""
                suggestion = f"expected {_type_name(fld.annotation)}" + (
                    f": {hint}" if hint else ""
                )
        problems.append(
            Problem(dotted, message, line=line, suggestion=suggestion)
            if filename == doc.filename
            else Problem(dotted, message + " [from --set]", suggestion=suggestion)
        )
    return problems


def _type_name(annotation: Any) -> str:
    name = getattr(annotation, "__name__", None)
    return (
        name
        if name and not str(annotation).startswith("typing")
        else str(annotation).replace("typing.", "")
    )


def _submodel(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that owns the field at ``loc`` (None when not a model)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        fld = getattr(current, "model_fields", {}).get(part)
        if fld is None:
            return None
        ann = fld.annotation
        for cand in (ann, *getattr(ann, "__args__", ())):
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                current = cand
                break
            for inner in getattr(cand, "__args__", ()) or ():
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    current = inner
                    break
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _resolve_section(
    kind: str,
    section: Mapping[str, Any],
    path: tuple[Any, ...],
    doc: Document,
    registry: Registry,
    problems: list[Problem],
) -> ResolvedComponent | None:
    name = section.get("name")
    if not isinstance(name, str):
        filename, line = doc.origin((*path, "name"))
        problems.append(
            Problem(
                ".".join(map(str, (*path, "name"))),
                "must be a component name",
                line=line,
                suggestion=f"available: {', '.join(registry.names(kind))}",
            )
        )
        return None
    if name not in registry.components[kind]:
        what, fix = registry.unknown_message(kind, name)
        _, line = doc.origin((*path, "name"))
        problems.append(
            Problem(".".join(map(str, (*path, "name"))), what, line=line, suggestion=fix)
        )
        return None
    component = registry.components[kind][name]
    values = {k: v for k, v in section.items() if k != "name"}
    try:
        options = component.config.model_validate(values)
    except ValidationError as exc:
        problems.extend(_problems_from_validation(exc, doc, path, component.config, name))
        return None
    return ResolvedComponent(component, options)


def validate(doc: Document, registry: Registry) -> ResolvedConfig:
    """Validate a parsed run file against the installed components (both phases).

    Raises:
        ConfigError: with every problem found.
    """
    problems: list[Problem] = []
    try:
        run = RunConfig.model_validate(doc.data)
    except ValidationError as exc:
        problems.extend(_problems_from_validation(exc, doc, (), RunConfig, "a run file"))
        run = None
    components: dict[str, ResolvedComponent] = {}
    reporters: list[ResolvedComponent] = []
    # Phase 2 runs on whatever sections phase 1 could read, so all problems come out together.
    for section, kind in COMPONENT_SECTIONS.items():
        raw = doc.data.get(section)
        if isinstance(raw, str):
            raw = {"name": raw}
        if isinstance(raw, dict) and "name" in raw:
            resolved = _resolve_section(kind, raw, (section,), doc, registry, problems)
            if resolved is not None:
                components[section] = resolved
    raw_reporters = doc.data.get("reporters")
    if raw_reporters is None and run is not None:
        raw_reporters = [r.model_dump() for r in run.reporters]
    if isinstance(raw_reporters, list):
        for i, raw in enumerate(raw_reporters):
            raw = {"name": raw} if isinstance(raw, str) else raw
            if isinstance(raw, dict) and "name" in raw:
                resolved = _resolve_section(
                    "reporter", raw, ("reporters", i), doc, registry, problems
                )
                if resolved is not None:
                    reporters.append(resolved)
    if not problems and run is not None:
        from kdkit.config_checks import check_machine

        # only a config valid in itself is checked against this machine (paths, model limits)
        problems.extend(check_machine(run, components, doc))
    if problems or run is None:
        problems.sort(key=lambda p: (p.line is None, p.line or 0, p.path))
        raise ConfigError(problems, doc.filename)
    return ResolvedConfig(run, components, reporters, doc.filename, doc.data)


def load_config(
    path: str | Path | None, registry: Registry, overrides: Iterable[str] = ()
) -> ResolvedConfig:
    """Read (or take the embedded default), override and validate a run configuration."""
    doc = default_document() if path is None else load_document(path)
    apply_overrides(doc, overrides)
    return validate(doc, registry)


def json_schema(registry: Registry) -> dict[str, Any]:
    """JSON Schema of a run file for the components installed now."""
    base = RunConfig.model_json_schema()
    defs = base.setdefault("$defs", {})

    def section_schema(kind: str) -> dict[str, Any]:
        variants = []
        for name in registry.names(kind):
            comp = registry.components[kind][name]
            schema = comp.config.model_json_schema()
            props = {"name": {"const": name, "description": comp.description}}
            props.update(schema.get("properties", {}))
            for k, v in schema.get("$defs", {}).items():
                defs[k] = v
            variants.append(
                {
                    "type": "object",
                    "title": f"{kind} {name}",
                    "properties": props,
                    "required": ["name"],
                    "additionalProperties": False,
                }
            )
        return {"anyOf": [*variants, {"type": "string", "enum": registry.names(kind)}]}

    props = base["properties"]
    for section, kind in COMPONENT_SECTIONS.items():
        props[section] = section_schema(kind)
    props["teacher"] = {"anyOf": [section_schema("teacher"), {"type": "null"}]}
    props["reporters"] = {"type": "array", "items": section_schema("reporter")}
    defs.pop("ComponentSection", None)
    return base
