"""The HTML report (``T/report.html``), one self-contained page: see
:func:`hudd_core.report.html.build_report`; :func:`retraining_section` is where the
RetrainModule's results go."""

from hudd_core.report.html import build_report, retraining_section

__all__ = ["build_report", "retraining_section"]
