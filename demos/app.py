"""A Gradio demo: a caption or a prompt clip in, generated audio out.

    python demos/app.py                                  # the shipped LM and codec, http://127.0.0.1:7860
    python demos/app.py --model runs/text-to-audio-tiny/model --port 7861

Controls: caption, prompt clip (continued; its reconstruction comes first), seconds, seed,
temperature, top-k (0: off), top-p (1: off) and classifier-free guidance (used with a caption).
The server listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import gradio as gr
import numpy as np

from codec.config import SAMPLE_RATE
from lm.api import AudioGenerator

Handler = Callable[[str, str | None, float, float, float, float, float, float], tuple[int, np.ndarray]]


def make_handler(generator: AudioGenerator, decode_steps: int = 25, sampler: str = "dpmpp2m") -> Handler:
    """The demo's callback: (caption, prompt path, seconds, seed, temperature, top-k, top-p, cfg) ->
    (16000, int16 samples [N]); bad input becomes a ``gr.Error`` shown in the page."""

    def generate_clip(text: str, prompt: str | None, seconds: float, seed: float, temperature: float,
                      top_k: float, top_p: float, cfg_scale: float) -> tuple[int, np.ndarray]:
        caption = text.strip() if text and text.strip() else None
        try:
            audio, _ = generator.generate(
                text=caption, prompt=prompt or None, seconds=float(seconds), seed=int(seed),
                temperature=float(temperature), top_k=int(top_k) if top_k and top_k > 0 else None,
                top_p=float(top_p) if top_p and top_p < 1 else None,
                cfg_scale=float(cfg_scale) if caption else 1.0, decode_steps=decode_steps, sampler=sampler,
            )
        except ValueError as error:  # AudioError, bad settings, a caption for a model without text ...
            raise gr.Error(str(error)) from None
        samples = audio[0, 0].clamp(-1, 1).numpy()
        return SAMPLE_RATE, (samples * 32767).astype(np.int16)

    return generate_clip


def build_app(generator: AudioGenerator, decode_steps: int = 25, sampler: str = "dpmpp2m") -> gr.Blocks:
    """The Blocks page wired to :func:`make_handler`."""
    handler = make_handler(generator, decode_steps, sampler)
    reads_text = generator.tokenizer is not None
    with gr.Blocks(title="semanticodec-lm") as app:
        gr.Markdown("# semanticodec-lm\nGenerate audio from a caption"
                    + (" or " if reads_text else ": this model has no text input; give ") + "a prompt clip to continue.")
        with gr.Row():
            with gr.Column():
                text = gr.Textbox(label="Caption", placeholder="a steady sine tone at A4 (440 Hz)",
                                  interactive=reads_text)
                prompt = gr.Audio(label="Prompt clip (optional)", type="filepath", sources=["upload", "microphone"])
                seconds = gr.Slider(0.5, 20.0, value=5.0, step=0.5, label="Seconds of new audio")
                seed = gr.Number(value=0, precision=0, label="Seed")
                with gr.Accordion("Sampling", open=False):
                    temperature = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="Temperature (0: greedy)")
                    top_k = gr.Slider(0, 1000, value=0, step=1, label="Top-k (0: off)")
                    top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="Top-p (1: off)")
                    cfg_scale = gr.Slider(1.0, 10.0, value=3.0, step=0.5, label="Guidance scale (with a caption)")
                button = gr.Button("Generate", variant="primary")
            with gr.Column():
                output = gr.Audio(label="Generated audio", type="numpy")
        button.click(handler, [text, prompt, seconds, seed, temperature, top_k, top_p, cfg_scale], output)
    return app


def main(argv: list[str] | None = None) -> None:
    """Load the generator and serve the demo on 127.0.0.1."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="LM folder or shipped LM name (default: %(default)s)")
    parser.add_argument("--codec", default=None, help="codec name or folder (default: the LM's own)")
    parser.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    parser.add_argument("--decode-steps", type=int, default=25, help="diffusion decoder steps (default: %(default)s)")
    parser.add_argument("--port", type=int, default=7860, help="(default: %(default)s)")
    args = parser.parse_args(argv)
    generator = AudioGenerator.from_pretrained(args.model, codec=args.codec, device=args.device)
    build_app(generator, args.decode_steps).launch(server_name="127.0.0.1", server_port=args.port)


if __name__ == "__main__":
    main()
