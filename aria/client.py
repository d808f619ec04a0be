"""A typed client of the ARIA server for downstream services, on top of the `openai` package.

    >>> from aria.client import AriaClient
    >>> client = AriaClient()                      # VLLM_HOST/VLLM_PORT/VLLM_API_KEY/VLLM_SERVED_NAME
    >>> client.diagnose(measurements)                 # -> aria.schema.Diagnostic, validated
    >>> client.report(measurements)                   # -> str, the French report

The two calls send exactly the bodies of aria.prompts (diagnostic: temperature 0.1, max_tokens 256,
guided JSON; report: temperature 0.3, max_tokens 2048). Connection errors, timeouts and 5xx are
retried a bounded number of times (aria.retry); a 4xx is never retried (the request itself is wrong). A guided
answer that is not schema-valid JSON raises InvalidDiagnosticError with the raw text: the client
never guesses a diagnosis (a server started without structured outputs ignores the schema).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import httpx
import openai
from pydantic import ValidationError

from aria.prompts import diagnostic_request, report_request
from aria.retry import with_retries
from aria.schema import Diagnostic, parse_diagnostic
from aria.settings import Settings, get_settings

DEFAULT_MAX_RETRIES = 2
DEFAULT_RETRY_BACKOFF_S = 0.5


class AriaClientError(RuntimeError):
    """A call to the ARIA server failed; the message says why."""


class InvalidDiagnosticError(AriaClientError):
    """The server answered a guided diagnostic with text that is not schema-valid JSON."""

    def __init__(self, raw_text: str | None, reason: str, finish_reason: str | None = None):
        self.raw_text = raw_text
        self.reason = reason
        self.finish_reason = finish_reason
        cut = " (cut by max_tokens)" if finish_reason == "length" else ""
        super().__init__(
            f"the server's diagnostic is not schema-valid JSON{cut}: {reason}; raw text: "
            f"{raw_text!r}. Is the server started with structured outputs "
            "(`make serve-ft` does it)?"
        )


class AriaClient:
    """Diagnostics and reports from the served ARIA model; what the arguments leave out comes
    from `settings` (a service's own), else from the environment (aria.settings.get_settings)."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        model: str | None = None,
        timeout: float | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        *,
        retry_backoff_s: float = DEFAULT_RETRY_BACKOFF_S,
        http_client: httpx.Client | None = None,
        settings: Settings | None = None,
    ):
        # The client is a library's entry point: a caller without Settings gets the environment's.
        settings = settings if settings is not None else get_settings()
        self.base_url = base_url or settings.base_url
        self.model = model or settings.vllm_served_name
        self.timeout = timeout if timeout is not None else settings.vllm_request_timeout_s
        self.max_retries = max_retries
        self.retry_backoff_s = retry_backoff_s
        # openai's own retries also cover 408/409/429: off, so that only our policy applies.
        self._openai = openai.OpenAI(
            base_url=self.base_url,
            api_key=api_key if api_key is not None else settings.api_key_value(),
            timeout=self.timeout,
            max_retries=0,
            http_client=http_client,
        )

    def __repr__(self) -> str:
        return f"AriaClient(base_url={self.base_url!r}, model={self.model!r})"

    def chat(self, body: Mapping[str, Any]) -> Any:
        """POST one chat completion body (retries included); returns openai's ChatCompletion."""
        return with_retries(
            lambda: self._openai.chat.completions.create(**body),
            attempts=self.max_retries + 1,
            base_s=self.retry_backoff_s,
        )

    def diagnose(self, measurements: Mapping[str, Any]) -> Diagnostic:
        """The validated diagnostic of a runner's measurements (guided JSON).

        Raises ValueError for bad measurements, openai.APIStatusError for a 4xx, and
        InvalidDiagnosticError when the answer is not schema-valid JSON.
        """
        completion = self.chat(diagnostic_request(dict(measurements), self.model))
        choice = completion.choices[0]
        text = choice.message.content
        if not text:
            raise InvalidDiagnosticError(text, "empty answer", choice.finish_reason)
        try:
            return parse_diagnostic(text)
        except (ValidationError, ValueError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise InvalidDiagnosticError(text, reason, choice.finish_reason) from error

    def report(self, measurements: Mapping[str, Any]) -> str:
        """The free-text French report of a runner's measurements (may be short; never None)."""
        completion = self.chat(report_request(dict(measurements), self.model))
        text = completion.choices[0].message.content
        if text is None:
            raise AriaClientError("the server returned no text for the report")
        return text

    def close(self) -> None:
        """Close the underlying HTTP connections."""
        self._openai.close()

    def __enter__(self) -> AriaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@lru_cache(maxsize=1)
def default_client() -> AriaClient:
    """One shared client configured from aria.settings."""
    return AriaClient()


def diagnose(measurements: Mapping[str, Any]) -> Diagnostic:
    """`AriaClient().diagnose(measurements)` with a shared client."""
    return default_client().diagnose(measurements)


def report(measurements: Mapping[str, Any]) -> str:
    """`AriaClient().report(measurements)` with a shared client."""
    return default_client().report(measurements)
