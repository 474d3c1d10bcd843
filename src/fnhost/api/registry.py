"""Routers of resources added after the core, each importable on its own.

Keeping this list in one small module lets resource modules be added without touching
the app factory.
"""

from __future__ import annotations

import importlib

from fastapi import APIRouter

PROJECT_ROUTER_MODULES = [
    "fnhost.api.functions",
    "fnhost.api.calls",
    "fnhost.api.schedules",
    "fnhost.api.assets",
    "fnhost.api.raw",
    "fnhost.api.groups",
    "fnhost.api.logstream",
]
ROOT_ROUTER_MODULES = ["fnhost.api.projects", "fnhost.api.metrics", "fnhost.ui.routes"]


def _load(names: list[str]) -> list[APIRouter]:
    routers = []
    for name in names:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # not written yet
                continue
            raise
        routers.append(module.router)
    return routers


def extra_project_routers() -> list[APIRouter]:
    return _load(PROJECT_ROUTER_MODULES)


def extra_root_routers() -> list[APIRouter]:
    return _load(ROOT_ROUTER_MODULES)
