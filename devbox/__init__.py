"""devbox: run a web app's dev server in a long-lived Docker container and reload it on every save."""

__version__ = "0.1.0"
