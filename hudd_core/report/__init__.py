"""The HTML report (``T/report.html``), one self-contained page of bounded size: see
:func:`hudd_core.report.html.build_report`; :func:`retraining_section` renders the
RetrainModule's results. :mod:`~hudd_core.report.gather` collects the data as plain dicts,
:mod:`~hudd_core.report.media` makes the pictures, ``templates/`` has one jinja2 template
per section."""

from hudd_core.report.html import build_report, retraining_section

__all__ = ["build_report", "retraining_section"]
