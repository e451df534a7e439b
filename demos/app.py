"""The Gradio demo: try the codec (round trip), generate from a caption, or continue a clip.

    python demos/app.py                                  # the shipped codec and LM, http://127.0.0.1:7860
    python demos/app.py --model runs/text-to-audio-tiny/model --port 7861

Tabs: *Codec* (upload or record -> tokens -> reconstruction, which starts playing while later
decoder windows are still decoding; with the token rate, bitrate and token count, spectrograms of the original and the reconstruction, and the token file and wav to
download), *Text to audio* and *Continue a clip*. Limits come from the models: the seconds slider
stops at what the LM holds, and an upload's size and duration are checked (from its header) before
any encoding. Requests wait in a queue (``--concurrency`` at a time) that shows each user's
position. Errors name the user's file, not the server's copy. Everything the demo writes goes to
one temporary folder, removed when the server stops. The server listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import numpy as np
import soundfile as sf
import torch

from codec.audio import AudioError, load_audio, write_audio
from codec.config import SAMPLE_RATE
from codec.frontend import log_mel_64
from codec.tokenfile import SUFFIX as TOKEN_SUFFIX
from codec.tokenfile import save_tokens
from lm.api import AudioGenerator

MAX_UPLOAD_SECONDS = 60.0
MAX_UPLOAD_MB = 50.0


def checked_upload(path: str | None, max_seconds: float, max_mb: float = MAX_UPLOAD_MB) -> tuple[str, float]:
    """(path, seconds) of an uploaded or recorded clip after the checks that cost no decoding: it
    exists, is at most ``max_mb`` MB, is audio soundfile can read, and lasts at most ``max_seconds``.
    Raises gr.Error naming the user's file (its base name, not the server's temporary path)."""
    if not path:
        raise gr.Error("no audio: upload or record a clip first")
    name = Path(path).name
    size = os.path.getsize(path)
    if size == 0:
        raise gr.Error(f"{name}: the file is empty")
    if size > max_mb * 1e6:
        raise gr.Error(f"{name}: {size / 1e6:.1f} MB is over the demo's {max_mb:g} MB limit")
    try:
        info = sf.info(path)
    except (RuntimeError, OSError):  # soundfile's LibsndfileError is a RuntimeError
        raise gr.Error(f"{name}: not an audio file this demo can read (wav, flac, ogg, mp3)") from None
    seconds = info.frames / info.samplerate if info.samplerate else 0.0
    if seconds <= 0:
        raise gr.Error(f"{name}: the clip holds no audio")
    if seconds > max_seconds:
        raise gr.Error(f"{name}: {seconds:.1f} s is longer than the {max_seconds:g} s this demo takes")
    return path, seconds


def spectrogram_figure(original: torch.Tensor, reconstruction: torch.Tensor, path: Path) -> Path:
    """Log-mel spectrograms of the original and the reconstruction side by side, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 3), sharey=True)
    for axis, wave, title in zip(axes, (original, reconstruction), ("original", "reconstruction")):
        mel = log_mel_64(wave[None])[0].numpy()
        axis.imshow(mel, origin="lower", aspect="auto", cmap="magma",
                    extent=(0, mel.shape[1] / 100, 0, mel.shape[0]))
        axis.set_title(title)
        axis.set_xlabel("seconds")
    axes[0].set_ylabel("mel bin")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


def _int16(audio: torch.Tensor) -> np.ndarray:
    return (audio.clamp(-1, 1).numpy() * 32767).astype(np.int16)


class Demo:
    """The demo's handlers over one generator (its codec does the Codec tab); outputs go to ``workdir``."""

    def __init__(self, generator: AudioGenerator, workdir: Path, decode_steps: int = 25,
                 max_upload_seconds: float = MAX_UPLOAD_SECONDS) -> None:
        self.generator, self.codec = generator, generator.codec
        self.workdir, self.decode_steps, self.max_upload_seconds = workdir, decode_steps, max_upload_seconds
        self.max_seconds = generator.max_seconds()

    def _new_folder(self) -> Path:
        folder = self.workdir / uuid.uuid4().hex  # one per request: concurrent users never collide
        folder.mkdir(parents=True)
        return folder

    def round_trip(self, path: str | None, steps: float, sampler: str, seed: float):
        """Codec tab: clip -> (reconstruction (rate, int16), stats Markdown, spectrogram PNG, token file, wav)."""
        *_, last = self.stream_round_trip(path, steps, sampler, seed)
        return last[1:]

    def stream_round_trip(self, path: str | None, steps: float, sampler: str, seed: float) -> Iterator[tuple]:
        """Codec tab, streamed: yields ``(chunk, ...)`` as each decoder window is done, so the page plays
        the start while the rest decodes; the last item is ``(None, reconstruction (rate, int16), stats
        Markdown, spectrogram PNG, token file, wav)``, the earlier ones ``((rate, int16 chunk), skip ...)``."""
        path, seconds = checked_upload(path, self.max_upload_seconds)
        name = Path(path).name
        try:
            wave = load_audio(path)
        except AudioError as error:
            raise gr.Error(str(error).replace(path, name)) from None
        try:
            tokens, lengths = self.codec.encode(wave[None], SAMPLE_RATE)
            windows = self.codec.iter_decode(tokens, lengths, steps=int(steps), sampler=sampler, seed=int(seed),
                                             batch_size=1)
            chunks = []
            for _, chunk, _ in windows:
                chunks.append(chunk[0])
                yield ((SAMPLE_RATE, _int16(chunk[0])), *[gr.skip()] * 5)
        except ValueError as error:
            raise gr.Error(str(error)) from None
        audio = torch.cat(chunks)
        folder = self._new_folder()
        stem = Path(name).stem or "clip"
        token_file = folder / f"{stem}{TOKEN_SUFFIX}"
        save_tokens(token_file, tokens, lengths, self.codec.config, extra={"source": name},
                    tokens_digest=self.generator.tokens_digest)
        wav = folder / f"{stem}.reconstruction.wav"
        write_audio(wav, audio)
        config = self.codec.config
        stats = (f"**{config.name}**: {config.token_rate} tokens/s, {config.bitrate / 1000:.2f} kbit/s; "
                 f"{int(lengths[0])} (semantic, acoustic) pairs for {seconds:.2f} s of audio")
        figure = spectrogram_figure(wave, audio[: wave.numel()], folder / f"{stem}.spectrograms.png")
        yield None, (SAMPLE_RATE, _int16(audio)), stats, str(figure), str(token_file), str(wav)

    def generate(self, text: str, prompt: str | None, seconds: float, seed: float, temperature: float,
                 top_k: float, top_p: float, cfg_scale: float):
        """Text-to-audio and continuation tabs: -> (audio (rate, int16), token file)."""
        *_, last = self.stream_generate(text, prompt, seconds, seed, temperature, top_k, top_p, cfg_scale)
        return last[1:]

    def stream_generate(self, text: str, prompt: str | None, seconds: float, seed: float, temperature: float,
                        top_k: float, top_p: float, cfg_scale: float) -> Iterator[tuple]:
        """Text-to-audio and continuation tabs, streamed: the LM samples the tokens, then each decoder
        window's audio is yielded as ``((rate, int16 chunk), skip, skip)`` as soon as it is decoded; the
        last item is ``(None, audio (rate, int16), token file)``."""
        caption = text.strip() if text and text.strip() else None
        name = None
        if prompt:  # the generator itself refuses a prompt + seconds the LM cannot hold, from the header
            prompt, _ = checked_upload(prompt, self.max_seconds)
            name = Path(prompt).name
        try:
            tokens = self.generator.generate_tokens(
                text=caption, prompt=prompt or None, seconds=float(seconds), seed=int(seed),
                temperature=float(temperature), top_k=int(top_k) if top_k and top_k > 0 else None,
                top_p=float(top_p) if top_p and top_p < 1 else None, cfg_scale=float(cfg_scale) if caption else 1.0)
            chunks = []
            for _, chunk in self.generator.iter_audio(tokens, float(seconds), decode_steps=self.decode_steps,
                                                      seed=int(seed)):
                chunks.append(chunk)
                yield (SAMPLE_RATE, _int16(chunk)), gr.skip(), gr.skip()
        except ValueError as error:  # AudioError, bad settings, a caption for a model without text ...
            message = str(error)
            raise gr.Error(message.replace(str(prompt), name) if name else message) from None
        folder = self._new_folder()
        token_file = folder / f"generated{TOKEN_SUFFIX}"
        save_tokens(token_file, tokens.tokens, tokens.lengths, self.codec.config,
                    extra={"text": caption, "prompt": name, "seed": int(seed)},
                    tokens_digest=self.generator.tokens_digest)
        yield None, (SAMPLE_RATE, _int16(torch.cat(chunks))), str(token_file)


def _sampling_controls() -> list:
    with gr.Accordion("Sampling", open=False):
        return [gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="Temperature (0: greedy)"),
                gr.Slider(0, 1000, value=0, step=1, label="Top-k (0: off)"),
                gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="Top-p (1: off)"),
                gr.Slider(1.0, 10.0, value=3.0, step=0.5, label="Guidance scale (with a caption)")]


def build_app(demo: Demo, concurrency: int = 2) -> gr.Blocks:
    """The three-tab page wired to ``demo``'s handlers, with a queue of ``concurrency`` workers."""
    reads_text = demo.generator.tokenizer is not None
    longest = max(0.5, int(demo.max_seconds * 2) / 2)  # slider steps of 0.5 s
    with gr.Blocks(title="semanticodec-lm") as app:
        gr.Markdown("# semanticodec-lm\nTry the codec on a clip, generate audio from a caption, or continue a "
                    f"clip. The LM holds {demo.max_seconds:.1f} s of audio in all (prompt + new).")
        with gr.Tab("Codec"):
            with gr.Row():
                with gr.Column():
                    clip = gr.Audio(label=f"Clip (at most {demo.max_upload_seconds:g} s)", type="filepath",
                                    sources=["upload", "microphone"], elem_id="codec-input")
                    steps = gr.Slider(1, 50, value=demo.decode_steps, step=1, label="Decoder steps")
                    # The small codecs' latent prior decodes closer to the input than their diffusion, and
                    # faster (docs/codec-model-card.md): their default here; the official ones have none.
                    sampler = gr.Radio(sorted(demo.codec.samplers, key="prior dpmpp2m ddim".split().index),
                                       value="prior" if "prior" in demo.codec.samplers else "dpmpp2m",
                                       label="Sampler", info="prior: no diffusion (steps and seed unused)")
                    seed = gr.Number(value=0, precision=0, label="Seed")
                    button = gr.Button("Encode and decode", variant="primary", elem_id="codec-run")
                with gr.Column():
                    streamed = gr.Audio(label="Reconstruction, playing as it decodes", streaming=True, autoplay=True,
                                        elem_id="codec-stream")
                    reconstruction = gr.Audio(label="Reconstruction", type="numpy", elem_id="codec-output")
                    stats = gr.Markdown(elem_id="codec-stats")
                    figure = gr.Image(label="Log-mel spectrograms", type="filepath")
                    token_file = gr.File(label="Token file")
                    wav = gr.File(label="Reconstruction (wav)")
            button.click(demo.stream_round_trip, [clip, steps, sampler, seed],
                         [streamed, reconstruction, stats, figure, token_file, wav], api_name="round_trip")
        for tab, with_prompt in (("Text to audio", False), ("Continue a clip", True)):
            with gr.Tab(tab):
                with gr.Row():
                    with gr.Column():
                        text = gr.Textbox(label="Caption" + (" (optional)" if with_prompt else ""),
                                          placeholder="a steady sine tone at A4 (440 Hz)", interactive=reads_text,
                                          visible=reads_text)
                        prompt = gr.Audio(label="Clip to continue", type="filepath", sources=["upload", "microphone"],
                                          visible=with_prompt)
                        seconds = gr.Slider(0.5, longest, value=min(5.0, longest), step=0.5,
                                            label=f"Seconds of new audio (at most {longest:g})")
                        seed = gr.Number(value=0, precision=0, label="Seed")
                        sampling = _sampling_controls()
                        button = gr.Button("Generate", variant="primary")
                    with gr.Column():
                        streamed = gr.Audio(label="Generated audio, playing as it decodes", streaming=True,
                                            autoplay=True, elem_id="continue-stream" if with_prompt else "tts-stream")
                        output = gr.Audio(label="Generated audio", type="numpy")
                        tokens = gr.File(label="Token file")
                button.click(demo.stream_generate, [text, prompt, seconds, seed, *sampling], [streamed, output, tokens])
    return app.queue(default_concurrency_limit=concurrency)


def stop_on_signals(workdir: Path) -> None:
    """Ctrl-C (SIGINT) and `kill` (SIGTERM) remove the demo's folder and end the process at once.

    Gradio's own shutdown can wait indefinitely on clients that keep their connection open; the
    demo keeps nothing worth flushing (its outputs are temporary), so it does not wait for them.
    """

    def stop(signum, frame) -> None:
        shutil.rmtree(workdir, ignore_errors=True)
        print("semanticodec-lm demo stopped", file=sys.stderr, flush=True)
        os._exit(130 if signum == signal.SIGINT else 0)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


def main(argv: list[str] | None = None) -> None:
    """Load the models and serve the demo on 127.0.0.1."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="LM folder or shipped LM name (default: %(default)s)")
    parser.add_argument("--codec", default=None, help="codec name or folder (default: the LM's own)")
    parser.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    parser.add_argument("--decode-steps", type=int, default=25, help="diffusion decoder steps (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=2, help="requests served at once (default: %(default)s)")
    parser.add_argument("--port", type=int, default=7860, help="(default: %(default)s)")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="semanticodec-demo-"))
    os.environ["GRADIO_TEMP_DIR"] = str(workdir / "uploads")  # uploads land in the demo's folder too
    stop_on_signals(workdir)
    try:
        generator = AudioGenerator.from_pretrained(args.model, codec=args.codec, device=args.device)
        app = build_app(Demo(generator, workdir / "outputs", args.decode_steps), args.concurrency)
        print(f"semanticodec-lm demo on http://127.0.0.1:{args.port} (files in {workdir})", flush=True)
        app.launch(server_name="127.0.0.1", server_port=args.port)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
