"""Entry points and files: ``/`` and ``/ui`` lead to the functions list; static files; the icon."""

from __future__ import annotations

from pathlib import Path

from fastapi.responses import FileResponse, RedirectResponse, Response

from fnhost.ui.web import HERE, page_router

STATIC: dict[str, Path] = {p.name: p for p in (HERE / "static").iterdir() if p.is_file()}

router = page_router()


@router.get("/")
def root() -> Response:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui")
def ui_root() -> Response:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui/static/{name}")
def static(name: str) -> Response:
    path = STATIC.get(name)
    if path is None:
        return Response("Not found", status_code=404, media_type="text/plain")
    return FileResponse(path, headers={"Cache-Control": "no-cache"})


@router.get("/favicon.ico")
def favicon() -> Response:
    # browsers ask for it on every page, whatever the page links to
    return FileResponse(STATIC["favicon.ico"], headers={"Cache-Control": "max-age=86400"})
