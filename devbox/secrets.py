"""Which values are secrets, by their names, as people name them: what `devbox config` masks."""

from __future__ import annotations

__all__ = ["is_secret_name", "masked", "MASK"]

import re
from typing import Any

MASK = "********"
_SECRET = re.compile(r"PASSWORD|PASSWD|PASSPHRASE|SECRET|TOKEN|CREDENTIAL|PRIVATE|(^|_)KEY$|_KEY_|APIKEY|^PWD$",
                     re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    """DB_PASSWORD, SECRET_KEY, NPM_TOKEN, AWS_SECRET_ACCESS_KEY, STRIPE_API_KEY, GOOGLE_CREDENTIALS..."""
    return bool(_SECRET.search(name))


def masked(config: dict[str, Any]) -> dict[str, Any]:
    """The resolved config with the values of secret-named variables (env, build args) masked."""
    out = dict(config)
    if isinstance(out.get("env"), dict):
        out["env"] = {k: MASK if is_secret_name(k) and v else v for k, v in out["env"].items()}
    build = out.get("build")
    if isinstance(build, dict) and isinstance(build.get("args"), dict):
        out["build"] = {**build, "args": {k: MASK if is_secret_name(k) and v else v for k, v in build["args"].items()}}
    return out
