"""Per-lab initialization and cleanup webhooks."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request

from labd.auth import webhook_signature
from labd.config import WebhookConfig

log = logging.getLogger("labd.webhooks")


def call_webhook(hook: WebhookConfig, payload: dict[str, str]) -> bool:
    """POST a signed JSON payload; retry with backoff; never raise.

    A failing hook must not block a student's cluster, so the outcome is
    logged and returned, not thrown.
    """
    body = json.dumps(payload, sort_keys=True).encode()
    for attempt in range(hook.retries + 1):
        stamp = str(int(time.time()))
        request = urllib.request.Request(  # noqa: S310 (config allows only http/https)
            hook.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "X-Labd-Event": payload["event"],
                "X-Labd-Timestamp": stamp,
                "X-Labd-Signature": webhook_signature(hook.secret, stamp, body),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=hook.timeout) as response:  # noqa: S310 (config allows only http/https)
                if 200 <= response.status < 300:
                    log.info("webhook %s for %s: HTTP %s", payload["event"], payload["user"], response.status)
                    return True
                reason = f"HTTP {response.status}"
        except urllib.error.HTTPError as err:
            reason = f"HTTP {err.code}"
        except (urllib.error.URLError, OSError) as err:
            reason = str(getattr(err, "reason", err))
        log.warning(
            "webhook %s for %s attempt %d/%d failed: %s",
            payload["event"],
            payload["user"],
            attempt + 1,
            hook.retries + 1,
            reason,
        )
        if attempt < hook.retries:
            time.sleep(min(0.2 * 2**attempt, 5.0))
    return False
