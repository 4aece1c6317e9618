"""Starter devbox.yaml files, one per framework; shipped inside the package as devbox.templates."""
