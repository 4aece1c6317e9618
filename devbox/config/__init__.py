"""devbox.yaml: the model (model.py), YAML with positions (yamlpos.py), variables and env files
(envfiles.py), and the whole load with layering and a Compose service's keys (load.py)."""

from .envfiles import interpolate, read_env_file
from .load import deep_merge, find_config, load, sanitise_name
from .model import COMPOSE_FILES, OVERRIDE_FILES, ComposeFiles, CONFIG_NAME, LOCAL_NAME, Browser, Build, Compose, Config, Debugger, Mount, Port, Ready, Rule, RuleAction, Volume, Watch

__all__ = ["Config", "Port", "Mount", "Volume", "Ready", "Watch", "Rule", "RuleAction", "Build", "Compose", "Debugger", "Browser",
           "find_config", "load", "CONFIG_NAME", "LOCAL_NAME", "COMPOSE_FILES", "OVERRIDE_FILES", "ComposeFiles", "sanitise_name", "read_env_file",
           "interpolate", "deep_merge"]
