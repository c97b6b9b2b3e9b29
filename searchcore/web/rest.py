"""The REST API beside the page, on the same server: ``/api/v1`` (FastAPI, which Gradio runs on).

==========================================  ================================================
``POST /api/v1/search``                     a form (multipart with an optional ``image`` file,
                                            or urlencoded), or a JSON object without a photo;
                                            the fields are the query's (:data:`.query.FIELDS`)
``GET /api/v1/products/{id}``               one product's fields
``GET /api/v1/products/{id}/image``         its photo (live products' photos only)
``GET /api/v1/health``                      model, catalog size, index version
``GET /api/v1/docs``                        the OpenAPI page (``/api/v1/openapi.json``)
==========================================  ================================================

A search answers the same JSON as the page's API and ``searchcore search --json``
(:func:`searchcore.query.answer`), each result with an ``image_url`` the client can fetch. The
page's guards hold here too: :class:`.guard.UploadGuard` caps the form's size, parts and the
uploads per client in front of it; a photo is read by searchcore's checked decoder from memory
(never from a path a client names); the parameters go through :meth:`.query.Query.parse`; and
:class:`.guard.QueryQueue` bounds the queries waiting and gives photos one slot shared with the
page (503 with ``Retry-After`` when full). Errors are ``{"error": "one line"}``; no server
paths appear in any answer.
"""

from __future__ import annotations

import json
import logging
import mimetypes
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from searchcore.calibrate import MatchGate
from searchcore.catalog import Catalog
from searchcore.errors import BusyError, CatalogError, ConfigError, SearchError
from searchcore.fsutil import FileTooLargeError, read_regular
from searchcore.query import FIELDS, Query, answer, run
from searchcore.web.guard import QueryQueue

if TYPE_CHECKING:
    from searchcore.engine import SearchEngine

log = logging.getLogger(__name__)

PREFIX = "/api/v1"
SEARCH_PATH = PREFIX + "/search"
FORM_PARTS = len(FIELDS) + 1  # every query field once, and one photo


class NotFound(SearchError):
    """A product id that is not (or no longer) in the catalog."""


def create_api(
    engine: SearchEngine, gate: MatchGate, queue: QueryQueue, *, max_photo_bytes: int
) -> FastAPI:
    """The ``/api/v1`` application, bound to the page's engine, match gate and query queue."""
    from searchcore import __version__

    api = FastAPI(
        title="searchcore",
        version=__version__,
        description="Visual and text product search: the page's queries over HTTP.",
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )

    @api.exception_handler(SearchError)
    async def _search_error(_: Request, exc: SearchError) -> JSONResponse:
        status, headers = 400, {}
        if isinstance(exc, BusyError):
            status, headers = 503, {"Retry-After": str(exc.retry_after)}
        elif isinstance(exc, NotFound):
            status = 404
        return JSONResponse({"error": str(exc)}, status_code=status, headers=headers)

    @api.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error in the REST API", exc_info=exc)
        return JSONResponse({"error": "Something went wrong on our side."}, status_code=500)

    def search_now(query: Query, photo: bytes | None) -> dict[str, Any]:
        with queue.enter(photo=photo is not None):
            result = run(engine, query, photo)
        threshold = gate.threshold(photo is not None, bool(query.text), query.text_weight)
        return answer(result, threshold)

    @api.post("/search", openapi_extra={"requestBody": _search_body()})
    async def search(request: Request) -> dict[str, Any]:
        """Search with a photo, words or both; the answer of ``searchcore search --json``."""
        params, photo = await _read_query(request, max_photo_bytes)
        out = await run_in_threadpool(search_now, Query.parse(**params), photo)
        for item in out["results"]:
            item["image_url"] = str(request.url_for("product_image", product_id=item["id"]))
        return out

    @api.get("/products/{product_id}")
    def product(product_id: str, request: Request) -> dict[str, Any]:
        """A product's catalog fields (as in a search result) and its photo's URL."""
        catalog = engine.catalog
        record = {k: str(v) for k, v in catalog.df.iloc[_row(catalog, product_id)].items()}
        record["image_url"] = str(request.url_for("product_image", product_id=product_id))
        return record

    @api.get("/products/{product_id}/image", name="product_image")
    def product_image(product_id: str) -> Response:
        """The product's photo: only live products' own photo files are ever read."""
        catalog = engine.catalog
        path = catalog.image_path(_row(catalog, product_id))
        try:
            data = read_regular(path, engine.image_limits.max_bytes)
        except (OSError, FileTooLargeError):
            raise NotFound(f"product {product_id!r} has no photo to serve") from None
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return Response(data, media_type=kind, headers={"Cache-Control": "max-age=300"})

    @api.get("/health")
    def health() -> dict[str, Any]:
        """What this server searches: its model, catalog size and index version."""
        spec = engine.embedder.spec
        local = Path(spec).name if ("/" in spec or "\\" in spec) else spec  # no server paths
        return {
            "status": "ok",
            "model": local,
            "model_fingerprint": engine.embedder.fingerprint,
            "products": int(engine.catalog.live.sum()),
            "indexed": len(engine.index),
            "index_version": engine.view.version,
            "upscaler": engine.upscaler.name if engine.upscaler is not None else None,
        }

    return api


def _row(catalog: Catalog, product_id: str) -> int:
    try:
        (row,) = catalog.rows_for_ids([product_id])  # products on sale only
    except CatalogError:
        raise NotFound(f"no product {product_id!r}") from None
    return row


async def _read_query(
    request: Request, max_photo_bytes: int
) -> tuple[dict[str, Any], bytes | None]:
    """The query fields and the photo's bytes, from a form or a JSON object."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    photo: bytes | None = None
    if kind == "application/json":
        try:
            body = json.loads(await request.body() or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise ConfigError("the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ConfigError("the body must be a JSON object of query fields")
        params = body
    elif kind in ("multipart/form-data", "application/x-www-form-urlencoded", ""):
        try:
            form = await request.form(max_files=1, max_fields=FORM_PARTS)
        except Exception as exc:  # the form parser's own refusals (too many parts, bad form)
            raise ConfigError(f"the form cannot be read: {getattr(exc, 'detail', exc)}") from None
        params = {}
        for key, value in form.multi_items():
            if key in params or (key == "image" and photo is not None):
                raise ConfigError(f"{key} is given twice")
            if isinstance(value, UploadFile):
                if key != "image":
                    raise ConfigError(f"only 'image' may be a file, not {key!r}")
                photo = await value.read(max_photo_bytes + 1)
                if len(photo) > max_photo_bytes:
                    raise ConfigError(f"the photo is larger than {max_photo_bytes >> 20} MB")
                photo = photo or None
            elif key == "image":
                raise ConfigError("image must be a file (multipart/form-data)")
            else:
                params[key] = value
    else:
        raise ConfigError("send the query as multipart/form-data, a urlencoded form or JSON")
    unknown = sorted(set(params) - set(FIELDS))
    if unknown:
        raise ConfigError(
            f"unknown field(s) {', '.join(map(repr, unknown[:5]))}; the query takes "
            f"image, {', '.join(FIELDS)}"
        )
    return params, photo


def _search_body() -> dict[str, Any]:
    """The OpenAPI description of the search form, from the query's one field list."""
    props = {name: {"type": kind, "description": text} for name, (kind, text) in FIELDS.items()}
    # a form's fields are text: an object or a list travels as text (JSON, or "x0,y0,x1,y1")
    flat = {
        name: {**p, "type": "string"} if p["type"] in ("object", "array") else p
        for name, p in props.items()
    }
    for p in props.values():
        if p["type"] == "array":
            p.update(items={"type": "number"}, minItems=4, maxItems=4)
        elif p["type"] == "object":
            p["additionalProperties"] = {
                "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]
            }
    form = {
        "type": "object",
        "properties": {"image": {"type": "string", "format": "binary"}, **flat},
    }
    return {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": form},
            "application/x-www-form-urlencoded": {"schema": {**form, "properties": flat}},
            "application/json": {"schema": {"type": "object", "properties": props}},
        },
    }
