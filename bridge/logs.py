"""Logging: ids only. Message text, phone numbers, e-mails and tokens never
reach a log line (ASVS 16.2.5); every line inside a job carries its job id."""

from __future__ import annotations

import logging

__all__ = ["configure_logging"]


class _JobIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        job_id = "-"
        try:
            from rq import get_current_job

            job = get_current_job()
            if job is not None:
                job_id = job.id
        except Exception:  # noqa: BLE001, S110 — never let logging break the caller
            pass
        record.job_id = job_id
        return True


def configure_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(_JobIdFilter())
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s [job=%(job_id)s] %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # urllib3 logs full URLs at DEBUG: Telegram's contain the bot token.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    # alembic announces its plugins and each migration step at INFO
    logging.getLogger("alembic").setLevel(max(level, logging.WARNING))
