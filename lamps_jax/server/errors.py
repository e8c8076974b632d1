"""Errors as OpenAI writes them: ``{"error": {"message", "type", "param", "code"}}`` with the HTTP status.

``ApiError`` is what the handlers raise; ``engine_error`` turns the engine's exceptions into one; the
installed handlers give the same shape to invalid JSON and fields (400, pydantic's error type as the code),
unknown routes (404) and anything unexpected (500). ``code`` is meant for programs, ``message`` for people.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from lamps_jax.async_llm import EngineDeadError, EngineOverloadedError
from lamps_jax.engine import InvalidRequestError

RETRY_AFTER_SECONDS = 1  # what a 503 tells the client to wait (the official client honours Retry-After)


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        param: str | None = None,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.type = status, message, code, param, type

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if self.status == 503 else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def bad_request(message: str, code: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, code, param)


def unavailable(message: str, code: str) -> ApiError:
    return ApiError(503, message, code, type="server_error")


def engine_error(err: Exception) -> ApiError | None:
    """The HTTP error for an exception the engine raised on a request, or None when it is a bug."""
    if isinstance(err, InvalidRequestError):
        return bad_request(str(err), "invalid_request")
    if isinstance(err, EngineOverloadedError):
        return unavailable(str(err), "engine_overloaded")
    if isinstance(err, EngineDeadError):
        return unavailable("the engine has stopped (the server is shutting down)", "engine_stopped")
    return None


def _path(error: dict) -> tuple:
    """Where in the body the error is (empty for invalid JSON, whose location is a character position)."""
    return () if error["type"] == "json_invalid" else tuple(part for part in error["loc"] if part != "body")


def _param(errors: list[dict]) -> str | None:
    """The field at fault: what the paths of the first wrong field's errors share (one value that matches no
    member of a union fails once per member, each path ending in the member's type)."""
    paths = [path for path in map(_path, errors) if path]
    if not paths:
        return None
    shared = [path for path in paths if path[0] == paths[0][0]]
    length = next((i for i in range(len(shared[0])) if any(p[: i + 1] != shared[0][: i + 1] for p in shared)), None)
    return ".".join(str(part) for part in shared[0][:length])


def _validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
    errors = err.errors() or [{"loc": (), "type": "invalid_request", "msg": "invalid request"}]
    message = "; ".join(f"{'.'.join(map(str, _path(e)))}: {e['msg']}" if _path(e) else e["msg"] for e in errors)
    return ApiError(400, message, errors[0]["type"], _param(errors)).response()


def _http_error(request: Request, err: HTTPException) -> JSONResponse:
    code = "not_found" if err.status_code == 404 else f"http_{err.status_code}"
    return ApiError(err.status_code, str(err.detail), code).response()


def _unexpected_error(request: Request, err: Exception) -> JSONResponse:
    """A bug: the client gets a 500 in the usual shape; the server logs the traceback (Starlette re-raises)."""
    return ApiError(
        500, f"internal error: {type(err).__name__}: {err}", "internal_error", type="server_error"
    ).response()


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, lambda request, err: err.response())
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
