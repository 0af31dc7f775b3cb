"""`invgen app`: a Gradio app to try a base model and its InvDiff adapters side by side in a browser.

    from invgen.app import build_app, launch
    launch("runs")                      # or: demo = build_app("runs"); demo.launch(...)

The app is a thin layer over the library: models come from `models.loading.load_pipeline` and
`InvariantGuidance.from_pretrained`, the grids and their bias figures from `side_by_side.side_by_side`
(sampling, `attach`/`detach`, `metrics.report.images_report` and `compare_reports`), the plots from
`metrics.plots`, the views from `cdvg.transforms.DiffusionTranslator` and `views.GenViewGenerator`, the
audits from `audit.run_audit` (read back with `audit.compare.load_audit`). What lives here is layout,
caching of loaded models, and turning errors into one-sentence messages:

    page.py         build_app, launch: the pipeline and adapter boxes, the tabs
    compare_tab.py  base and adapter grids from the same seeds, their plots and metrics
    views_tab.py    CDvG and GenView views of one image
    audit_tab.py    a small audit run, or an audit folder opened; audits.py reads and names the folders
    models.py       the loaded pipelines, adapters and classifiers, kept between requests
    defaults.py     what the page starts with for a pipeline (the colored-digits benchmark's own defaults)
    helpers.py      gradio imported offline, event handlers with one-sentence errors, display helpers

Each tab module holds its layout and, as plain functions, the work its buttons do (callable without a page).
The machine may be offline: gradio's analytics and update check are switched off before it is imported,
and the theme uses the system's fonts instead of fetching web fonts.
"""

from invgen.app.audit_tab import MAX_AUDIT_PER_PROMPT
from invgen.app.audits import AUDITS, audit_folder, find_audits, show_audit
from invgen.app.defaults import AppDefaults, defaults_for
from invgen.app.helpers import AUTO, CSS, DISPLAY_SIDE, NO_ADAPTER
from invgen.app.models import Models
from invgen.app.page import build_app, launch
from invgen.app.views_tab import GENVIEW_VIEWS

__all__ = [
    "AUDITS", "AUTO", "CSS", "DISPLAY_SIDE", "GENVIEW_VIEWS", "MAX_AUDIT_PER_PROMPT", "NO_ADAPTER", "AppDefaults",
    "Models", "audit_folder", "build_app", "defaults_for", "find_audits", "launch", "show_audit",
]
