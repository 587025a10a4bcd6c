"""The option schema engine (mmcr.schema): one error format for unknown keys, types, ranges and choices;
YAML read safely; resume rules; the argparse helpers every command uses."""

import argparse

import pytest

from mmcr import schema
from mmcr.schema import AT_LEAST_1, POSITIVE, ConfigError, option, section, subsection

REGISTRY = {"a": 1, "b": 2}


@section
class Inner:
    depth: int = option(2, check=AT_LEAST_1, resume="fixed", doc="how deep")
    names: list[str] = option(["a"], choices=lambda: sorted(REGISTRY), doc="registered names")


@section
class Outer:
    rate: float = option(0.1, check=POSITIVE, resume="free", doc="a rate")
    kind: str = option("a", choices=lambda: sorted(REGISTRY))
    label: str | None = option(None, validate=lambda v: None if v.isidentifier() else "use an identifier")
    flag: bool = option(False)
    extra: dict = option({}, doc="free-form")
    inner: Inner = subsection(Inner)

    def check(self):
        if self.flag and self.kind != "a":
            raise ConfigError("flag=true needs kind=a")


@pytest.mark.parametrize(
    "data,match",
    [
        ({"rat": 1}, r"^unknown config key 'rat'; valid keys here: extra, flag, inner, kind, label, rate$"),
        ({"inner": {"deep": 1}}, r"^unknown config key 'inner.deep'; valid keys here: depth, names$"),
        ({"inner": 3}, r"^inner is a section; set its fields, e.g. inner.depth=\.\.\.$"),
        ({"rate": "fast"}, r"^rate must be a number, got 'fast'$"),
        ({"rate": 0}, r"^rate must be > 0 and finite, got 0.0$"),
        ({"rate": float("nan")}, r"^rate must be > 0 and finite, got nan$"),
        ({"inner": {"depth": 0}}, r"^inner.depth must be >= 1, got 0$"),
        ({"inner": {"depth": 1.5}}, r"^inner.depth must be an integer, got 1.5$"),
        ({"flag": "yes"}, r"^flag must be true or false, got 'yes'$"),
        ({"kind": "c"}, r"^invalid value 'c' for kind; choose one of a, b$"),
        ({"inner": {"names": ["a", "z"]}}, r"^invalid value 'z' for inner.names; choose one of a, b$"),
        ({"label": "not one"}, r"^invalid value 'not one' for label; use an identifier$"),
        ({"kind": None}, r"^kind cannot be null$"),
        ({"extra": [1]}, r"^extra must be a mapping, got \[1\]$"),
        ({"flag": True, "kind": "b"}, r"^flag=true needs kind=a$"),
    ],
)
def test_every_refusal_is_one_line_naming_the_key(data, match):
    with pytest.raises(ConfigError, match=match) as e:
        Outer.from_dict(data)
    assert "\n" not in str(e.value)


def test_choices_are_read_when_a_value_is_checked():
    """A name registered after the section was defined (a plugin) is valid at once."""
    with pytest.raises(ConfigError, match="choose one of a, b"):
        Outer.from_dict({"kind": "late"})
    REGISTRY["late"] = 3
    try:
        assert Outer.from_dict({"kind": "late"}).kind == "late"
    finally:
        del REGISTRY["late"]


def test_defaults_round_trip_replace_and_describe():
    cfg = Outer.from_dict({})
    assert cfg == Outer() and cfg.inner.names == ["a"]
    assert Outer.from_dict(schema.to_dict(cfg)) == cfg
    new = cfg.replace(**{"rate": 2, "inner.depth": 5})
    assert (new.rate, new.inner.depth, cfg.inner.depth) == (2.0, 5, 2)
    with pytest.raises(ConfigError, match="unknown config key 'inner.nope'"):
        cfg.replace(**{"inner.nope": 1})
    info = {i.key: i for i in schema.describe(Outer)}
    assert info["rate"].valid == "> 0 and finite" and info["rate"].doc == "a rate"
    assert info["inner.depth"].valid == ">= 1" and info["kind"].valid == "one of a, b"
    assert info["label"].valid == "str or null"
    assert "inner.depth = 2  (>= 1)  # how deep" in schema.help_text(Outer)


def test_resume_rules_and_changes():
    a = Outer()
    b = a.replace(**{"rate": 0.5, "inner.depth": 3, "extra": {"k": 1}, "kind": "b"})
    rules = {c.path: c.rule for c in schema.config_changes(a, b)}
    assert rules == {"rate": "free", "inner.depth": "fixed", "extra": "apply", "kind": "apply"}
    with pytest.raises(ValueError, match="resume must be one of free, apply, fixed"):
        option(1, resume="sometimes")


def test_yaml_is_read_safely_and_written_back(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("rate: 2e-3\ninner: {depth: 4}\n")
    data = schema.read_yaml(p)
    cfg = Outer.from_dict(data)
    assert cfg.rate == pytest.approx(2e-3) and cfg.inner.depth == 4
    p.write_text(schema.dump_yaml(cfg))
    assert Outer.from_dict(schema.read_yaml(p)) == cfg
    p.write_text("rate: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match=r"c.yaml holds a YAML tag that is not plain data .*line 1.*yaml.safe_load"):
        schema.read_yaml(p)
    with pytest.raises(ConfigError, match="as YAML"):
        schema.parse_override("rate=!!python/name:os.system")


def _parser():
    p = argparse.ArgumentParser(prog="x")
    p.add_argument("source")
    schema.add_config_arguments(p, Outer)
    schema.config_flag(p, "--rate", "rate", Outer, type=float)
    schema.config_flag(p, "--depth", "inner.depth", Outer, type=int)
    return p


def test_argparse_helpers(tmp_path, capsys):
    p = _parser()
    with pytest.raises(SystemExit) as e:
        p.parse_args(["--help-config"])  # no positional argument needed
    assert e.value.code == 0 and "inner.depth = 2" in capsys.readouterr().out
    f = tmp_path / "c.yaml"
    f.write_text("rate: 3\nkind: b\n")
    args = p.parse_args(["s", "--config", str(f), "--set", "inner.depth=7", "--rate", "4"])
    cfg = schema.config_from_args(args, Outer)
    assert (cfg.rate, cfg.kind, cfg.inner.depth) == (4.0, "b", 7)  # defaults <- file <- --set <- flags
    # a flag and --set of the same key: the same value is fine, another is refused by name
    assert schema.config_from_args(p.parse_args(["s", "--set", "rate=4", "--rate", "4"]), Outer).rate == 4
    with pytest.raises(ConfigError, match=r"--depth 3 contradicts inner.depth=7 \(from --set\); give inner.depth once"):
        schema.config_from_args(p.parse_args(["s", "--set", "inner.depth=7", "--depth", "3"]), Outer)
    with pytest.raises(ConfigError, match="unknown config key 'nope'"):
        schema.config_from_args(p.parse_args(["s", "--set", "nope=1"]), Outer)
    args = p.parse_args(["s", "--print-config", "--rate", "5"])
    assert schema.print_config(args, schema.config_from_args(args, Outer))
    assert "rate: 5.0" in capsys.readouterr().out
    assert "[rate, default 0.1]" in p.format_help()
