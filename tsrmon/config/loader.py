"""Finding and reading the configuration file: UTF-8, strict YAML, then
:func:`tsrmon.config.model.build_config`."""

import os

import yaml

from tsrmon.config.checks import ConfigError
from tsrmon.config.model import build_config
from tsrmon.config.strict_yaml import DuplicateKeyError, StrictLoader, yaml_problem, yaml_where


def load_config(path=None, base_dir=None):
    """Read and validate a YAML file; ``path=None`` gives the defaults."""
    if path is None:
        return build_config({}, None, base_dir)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(path, None, f"cannot read configuration: {e.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError(path, None, f"not UTF-8 text: byte 0x{data[e.start]:02x} at line {line} "
                          f"(save the file as UTF-8)") from None
    try:
        raw = yaml.load(text, Loader=StrictLoader)
    except DuplicateKeyError as e:
        raise ConfigError(path, e.key, e.problem) from None
    except yaml.YAMLError as e:
        raise ConfigError(path, None, f"invalid YAML{yaml_where(e, text)}: {yaml_problem(e)}") from None
    return build_config(raw, path, base_dir)


def default_config_path(base_dir=None):
    """``TSRMON_CONFIG``, else ``resources/config.yml`` (the deployed layout)
    if present in the working directory, else ``etc/tsrmon.yml``."""
    env = os.environ.get("TSRMON_CONFIG")
    if env:
        return env
    base_dir = base_dir or os.getcwd()
    legacy = os.path.join(base_dir, "resources", "config.yml")
    if os.path.exists(legacy):
        return legacy
    return os.path.join(base_dir, "etc", "tsrmon.yml")
