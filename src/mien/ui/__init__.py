"""`mien ui`: the web UI (Gradio). :mod:`mien.ui.service` does the work over :class:`mien.edit.Editor`;
:mod:`mien.ui.app` is the page layout."""
