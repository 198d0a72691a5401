"""The `mien ui` page: Gradio layout and wiring only; every action is a :class:`mien.ui.service.Service` call.

Errors a visitor can cause (:class:`mien.errors.MienError`: an unreadable file, no face, an unknown word)
appear as a message in the page's status line; anything else is logged on the server and shown as one
line, never a traceback. Generation runs through Gradio's queue, one job at a time (the service's nets
are shared, and on a CPU two jobs at once only share the same cores).
"""

from __future__ import annotations

import logging
import traceback
from functools import wraps

import gradio as gr
import numpy as np

from mien.errors import MienError
from mien.expression.aus import CONTROL_AUS, SIDED_AUS
from mien.expression.basic import BASIC
from mien.settings import GenerationSettings
from mien.ui.service import CONTROLS, Controls, Service, scorecard_text, vocabulary_words

log = logging.getLogger("mien.ui")
PRIVACY = ("Photos you upload are used only to answer your request: they are not stored after it, and the "
           "results are deleted from the server within 10 minutes. Generated images carry mien's metadata.")
ATTRIBUTION = ("Example photo: Face Research Lab London Set (DeBruine & Jones 2017), CC BY 4.0.")
SIDE_NOTE = "L and R are the person's own left and right (their left is on the right of the photo)."


def _status(text: str, kind: str = "info") -> str:
    icon = {"info": "", "error": "**Error:** ", "ok": ""}[kind]  # words, not emoji: not every browser has the font
    return f"{icon}{text}"


def guarded(n_out: int, status_index: int):
    """Run a handler; a MienError or a bug becomes a message in the status output (others unchanged)."""

    def wrap(fn):
        @wraps(fn)
        def inner(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except MienError as e:
                msg = _status(str(e), "error")
            except Exception as e:  # a bug: logged with its traceback on the server, one line in the page
                log.error("internal error in %s:\n%s", fn.__name__, traceback.format_exc())
                msg = _status(f"internal error ({type(e).__name__}: {e}); please report it", "error")
            out = [gr.update() for _ in range(n_out)]
            out[status_index] = msg
            return tuple(out)

        return inner

    return wrap


def _paths(files) -> list[str]:
    if not files:
        return []
    files = files if isinstance(files, list) else [files]
    return [f if isinstance(f, str) else getattr(f, "name", str(f)) for f in files]


def _face_index(choice: str | None) -> int:
    return int(str(choice).split()[1]) if choice else 0


def build(service: Service, default_steps: int | None = None) -> gr.Blocks:
    """The page, wired to ``service``."""
    steps0 = default_steps or GenerationSettings().steps
    words = vocabulary_words()
    with gr.Blocks(title="mien: change the expression in a photo", delete_cache=(60, 600), analytics_enabled=False) as demo:
        gr.Markdown("# mien: change the expression in a photo\n" + PRIVACY)
        preset_state = gr.State({})
        with gr.Row():
            with gr.Column(scale=1):
                photos = gr.File(label="Photo of the person (or several of the same person)", file_count="multiple",
                                 elem_id="photos")
                faces = gr.Gallery(label="Faces found", columns=4, height=170, object_fit="contain", fit_columns=False,
                                   allow_preview=False, elem_id="faces")
                face = gr.Radio(["face 0"], value="face 0", label="Face to edit (0 is the largest)", elem_id="face")
                reference = gr.Image(label="Reference photo (optional): take its expression", type="filepath",
                                     sources=["upload"], height=160, elem_id="reference")
            with gr.Column(scale=2):
                with gr.Row():
                    label = gr.Radio(list(BASIC), label="Basic expression", elem_id="label")
                    term = gr.Dropdown(words, value=None, label="…or search the vocabulary (135 terms; compounds and "
                                       "recipes like happy:0.6+AU12L:3 too)", allow_custom_value=True, filterable=True,
                                       elem_id="term")
                with gr.Row():
                    # 0.6, as the CLI's first example: the model draws full-intensity happy and surprised with
                    # squeezed, smudged eyes on many faces, while 0.6 still reads as the label (model card)
                    intensity = gr.Slider(0, 1, value=0.6, step=0.05, label="Intensity", elem_id="intensity")
                    from_neutral = gr.Checkbox(True, label="From neutral: replace the photo's own expression (off: "
                                               "add the expression to it)", elem_id="from_neutral")
                recipe = gr.Markdown("neutral face (no expression chosen)", elem_id="recipe")
                sliders = {}
                with gr.Accordion("Action Units (0-5), preset from the expression; " + SIDE_NOTE, open=True):
                    for a in CONTROL_AUS:
                        with gr.Row():
                            names = [a.au + "L", a.au + "R"] if a.au in SIDED_AUS else [a.au]
                            for n in names:
                                side = {"L": " left", "R": " right"}.get(n[-1], "") if n != a.au else ""
                                sliders[n] = gr.Slider(0, 5, value=0, step=0.1, label=f"{a.au}{side}: {a.facs_name}",
                                                       elem_id=f"au_{n}", min_width=160)
                with gr.Row():
                    seed = gr.Number(0, precision=0, label="Seed (same seed, same image)", elem_id="seed")
                    steps = gr.Slider(2, 50, value=steps0, step=1, label="Steps (fewer: faster, rougher)",
                                      elem_id="steps")
                with gr.Row():
                    go = gr.Button("Generate", variant="primary", elem_id="generate")
                    sheet_btn = gr.Button("Expression sheet (7 labels)", elem_id="sheet")
        status = gr.Markdown("Upload a photo to start.", elem_id="status")
        with gr.Row():
            compare = gr.ImageSlider(label="Before / after (drag)", type="numpy", elem_id="compare")
            result = gr.Image(label="Result at full resolution", type="numpy", interactive=False, elem_id="result")
        with gr.Row():
            download = gr.File(label="Download (PNG with mien's metadata)", interactive=False, elem_id="download")
            scorecard = gr.Markdown(elem_id="scorecard")
        sheet = gr.Gallery(label="Expression sheet", columns=7, elem_id="sheet_gallery")
        gr.Markdown(ATTRIBUTION)

        slider_list = [sliders[n] for n in CONTROLS]

        # -- photos -> faces ----------------------------------------------------------------------
        @guarded(3, 2)
        def on_photos(files):
            if not files:
                return [], gr.update(choices=["face 0"], value="face 0"), "Upload a photo to start."
            imgs = service.read_photos(_paths(files))
            thumbs, note = service.faces(imgs[0])
            choices = [f"face {i}" for i in range(len(thumbs))]
            return ([(t, c) for t, c in zip(thumbs, choices)], gr.update(choices=choices, value=choices[0]),
                    _status(note, "ok"))

        photos.change(on_photos, photos, [faces, face, status])

        # -- expression -> preset sliders -----------------------------------------------------------
        def preset(expression, x):
            levels, text = service.preset(expression, x)
            return [levels, text, *[levels[n] for n in CONTROLS]]

        @guarded(3 + len(CONTROLS), 2)
        def on_label(lab, x):
            return (gr.update(value=None), *preset(lab, x)) if lab else tuple(gr.update() for _ in range(3 + len(CONTROLS)))

        @guarded(3 + len(CONTROLS), 2)
        def on_term(word, x):
            return (gr.update(value=None), *preset(word, x)) if word else tuple(gr.update() for _ in range(3 + len(CONTROLS)))

        @guarded(2 + len(CONTROLS), 1)
        def on_intensity(lab, word, x):
            return tuple(preset(word or lab, x))

        label.input(on_label, [label, intensity], [term, preset_state, recipe, *slider_list])
        term.input(on_term, [term, intensity], [label, preset_state, recipe, *slider_list])
        intensity.release(on_intensity, [label, term, intensity], [preset_state, recipe, *slider_list])

        # -- generate ---------------------------------------------------------------------------------
        def controls(lab, word, x, neutral, ref, levels, values):
            return Controls(word or lab or None, float(x), dict(zip(CONTROLS, values)), dict(levels or {}),
                            bool(neutral), ref or None)

        inputs = [photos, face, label, term, intensity, from_neutral, reference, preset_state, seed, steps, *slider_list]

        @guarded(5, 4)
        def on_generate(files, face_choice, lab, word, x, neutral, ref, levels, sd, st, *values,
                        progress=gr.Progress()):  # fmt: skip
            imgs = service.read_photos(_paths(files))
            c = controls(lab, word, x, neutral, ref, levels, values)
            progress(0, desc="preparing the face")
            out = service.generate(imgs, _face_index(face_choice), c, int(sd or 0), GenerationSettings(steps=int(st)),
                                   progress=lambda f, t: progress(f, desc=t))  # fmt: skip
            before = imgs[0]
            return ((before, out.photo), out.photo, str(out.path), scorecard_text(out.score, out.request),
                    _status(f"done: {out.request}, seed {out.metadata['seed']}", "ok"))

        go.click(on_generate, inputs, [compare, result, download, scorecard, status], concurrency_id="generate",
                 concurrency_limit=1, api_name="generate")  # fmt: skip

        @guarded(2, 1)
        def on_sheet(files, face_choice, lab, word, x, neutral, ref, levels, sd, st, *values, progress=gr.Progress()):
            imgs = service.read_photos(_paths(files))
            c = controls(lab, word, x, neutral, ref, levels, values)
            outs = service.sheet(imgs, _face_index(face_choice), c, int(sd or 0), GenerationSettings(steps=int(st)),
                                 progress=lambda f, t: progress(f, desc=t))  # fmt: skip
            gallery = [(str(o.path), f"{o.request}: identity {np.mean(o.score['identity_distance']):.2f}"
                        + ("" if o.score["same_person"] else " (below the verification threshold)")) for o in outs]  # fmt: skip
            return gallery, _status(f"expression sheet done: {len(outs)} labels, seed {int(sd or 0)}", "ok")

        sheet_btn.click(on_sheet, inputs, [sheet, status], concurrency_id="generate", concurrency_limit=1,
                        api_name="sheet")

        # -- a compact API for scripts (gradio_client): one photo, a request, a seed -----------------
        @guarded(3, 2)
        def api_edit(photo, expression, intensity_, au, sd, st):
            imgs = service.read_photos([photo])
            from mien.expression.aus import parse_au_spec

            aus = parse_au_spec(au) if au else {}
            c = Controls(expression or None, float(intensity_), aus, {})
            out = service.generate(imgs, 0, c, int(sd or 0), GenerationSettings(steps=int(st)))
            return str(out.path), out.metadata, ""

        with gr.Row(visible=False):
            a_photo, a_expr, a_int = gr.File(), gr.Textbox(), gr.Number(1.0)
            a_au, a_seed, a_steps = gr.Textbox(), gr.Number(0, precision=0), gr.Number(steps0, precision=0)
            a_out, a_meta, a_err = gr.File(), gr.JSON(), gr.Textbox()
            a_btn = gr.Button()
        a_btn.click(api_edit, [a_photo, a_expr, a_int, a_au, a_seed, a_steps], [a_out, a_meta, a_err],
                    concurrency_id="generate", concurrency_limit=1, api_name="edit")
    return demo


def launch(service: Service, host: str = "127.0.0.1", port: int | None = None, steps: int | None = None,
           block: bool = True, max_queue: int = 64):  # fmt: skip
    """Build the page and serve it through Gradio's queue (at most ``max_queue`` waiting jobs)."""
    demo = build(service, steps)
    demo.queue(max_size=max_queue, default_concurrency_limit=1)
    demo.launch(server_name=host, server_port=port, prevent_thread_lock=not block, show_error=False,
                max_file_size="60mb", footer_links=["api"], quiet=True)
    return demo
