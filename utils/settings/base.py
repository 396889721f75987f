"""Typed configuration sections: one dataclass per concern, from which the flags are generated.

A section is a dataclass whose fields are either its own flags (`option`, `switch`) or values it
reads that another section owns or that the run derives (`shared`: the LLM width, the variables per
sample, the horizon). Each field's default and help text are the flag's; `validate` holds the checks
that need nothing but the section (each `ValueError` names the flag). The argparse groups, the YAML
keys, the record of which flags define a model's architecture, and which flags are TimeLLM's alone
are all read from the sections (utils/config.py), so a flag is written once, here.

Modules take their own section: `TimeSeriesMoE(MoEConfig(num_experts=4, llm_dim=64))` in a test,
`MoEConfig.from_config(config)` from a run's resolved configuration.
"""
import typing
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, ClassVar, Optional


def option(default: Any, help: str = "", *, flags: tuple = (), choices=None, metavar=None, nargs=None,
           architecture: Optional[bool] = None, models: tuple = (), store_true: bool = False) -> Any:
    """A flag spelled --<field name> (and any other `flags`); its default and help. A list field takes
    one or more values (`nargs` overrides: 4 for exactly four).
    `architecture` overrides the section's (e.g. a loss weight inside an architecture section);
    `models`: the models this flag is for, refused for others when given a non-default value."""
    metadata = {"kind": "store_true" if store_true else "value", "help": help, "flags": flags, "choices": choices,
                "metavar": metavar, "nargs": nargs, "architecture": architecture, "models": models}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def switch(default: int, help: str, *, architecture: Optional[bool] = None) -> Any:
    """An on/off flag taking 0 or 1, or nothing for 1: `--use_tapr`, `--use_tapr 1`, `--use_tapr 0`
    (upstream's bare `--use_amp` style and the explicit values of the shell scripts both work)."""
    return field(default=default, metadata={"kind": "switch", "help": help, "flags": (), "choices": None, "metavar": None,
                                            "nargs": None, "architecture": architecture, "models": ()})


def shared(default: Any = None) -> Any:
    """A value the section reads but does not own: another section's flag or a derived value."""
    return field(default=default, metadata={"kind": "shared"})


@dataclass
class Section:
    group: ClassVar[str] = ""  # the --help group and the name recorded per flag
    description: ClassVar[str] = ""
    architecture: ClassVar[bool] = False  # its flags define the model's shape: a checkpoint loads only if they match
    models: ClassVar[tuple] = ()  # the models it configures (validated only for them); empty: every model
    exclusive: ClassVar[bool] = False  # its flags given for another model are an error (Time-LLM's parts)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Checks within the section (shared values may be None: not resolved yet)."""

    @classmethod
    def flag_fields(cls) -> list[Field]:
        return [item for item in fields(cls) if item.metadata.get("kind") != "shared"]

    @classmethod
    def is_architecture(cls, item: Field) -> bool:
        override = item.metadata.get("architecture")
        return cls.architecture if override is None else override

    @classmethod
    def from_config(cls, config, **overrides):
        """The section of a resolved configuration (a namespace or a dict), with `overrides`."""
        values = config if isinstance(config, dict) else vars(config)
        chosen = {item.name: values[item.name] for item in fields(cls) if item.name in values}
        return cls(**{**chosen, **overrides})


def field_type(section: type, item: Field) -> tuple[type, Optional[str]]:
    """(argparse type, nargs) of a field from its annotation: int, float, str, Optional[...], list[...]."""
    annotation = typing.get_type_hints(section)[item.name]
    nargs = None
    if typing.get_origin(annotation) is typing.Union:  # Optional[X]
        annotation = next(argument for argument in typing.get_args(annotation) if argument is not type(None))
    if typing.get_origin(annotation) is list:
        annotation, nargs = typing.get_args(annotation)[0], "+"
    return annotation, nargs


def add_section(parser, section: type) -> None:
    """The section's flags as one argparse group of `parser` (a utils.config.ConfigParser)."""
    group = parser.group(section.group, section.description)
    for item in section.flag_fields():
        meta = item.metadata
        default = item.default if item.default is not MISSING else item.default_factory()
        spellings = (f"--{item.name}", *meta["flags"])
        if meta["kind"] == "switch":
            group.switch(*spellings, default=default, help=meta["help"])
        elif meta["kind"] == "store_true":
            group.add(*spellings, action="store_true", help=meta["help"])
        else:
            kind, nargs = field_type(section, item)
            extra = {key: meta[key] for key in ("choices", "metavar") if meta[key] is not None}
            group.add(*spellings, type=kind, nargs=meta["nargs"] or nargs, default=default, help=meta["help"], **extra)
