"""``semanticodec``: encode, decode, reconstruct and inspect from the command line.

    semanticodec encode clips/ more.wav -o tokens/            # folders are searched recursively
    semanticodec info tokens/more.wav.tokens.safetensors
    semanticodec decode tokens/*.tokens.safetensors -o decoded/ --steps 25 --sampler dpmpp2m --seed 0
    semanticodec reconstruct clips/ -o recon/ --seed 0

Every command reports a bad input and goes on with the rest; the exit status is 1 if any input
failed. Outputs are written atomically, and ``encode`` skips outputs that already exist and
validate, so an interrupted run can simply be started again.
"""

from __future__ import annotations

import argparse
import glob
import json
import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import soundfile as sf
import torch
from tqdm import tqdm

from codec.config import SAMPLE_RATE
from codec.decoder import DECODE_SAMPLERS
from codec.files import atomic_path
from codec.tokenfile import SUFFIX as TOKEN_SUFFIX

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".opus", ".mp3", ".oga"}


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default",
                        help="shipped name, a save_pretrained folder, or official-<rate>-<vocab> (default: %(default)s)")
    parser.add_argument("--checkpoint-path", default=None,
                        help="local folder laid out like the official hub repository (official models only)")
    parser.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")


def _add_decode_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=50, help="diffusion steps (default: %(default)s)")
    parser.add_argument("--cfg-scale", type=float, default=2.0, help="classifier-free guidance (default: %(default)s)")
    _add_sampler_arg(parser, "ddim")
    parser.add_argument("--eta", type=float, default=1.0, help="DDIM noise; 0 is deterministic (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the diffusion noise (default: random)")
    parser.add_argument("--batch-size", type=int, default=4, help="decoder windows per batch (default: %(default)s)")
    _add_precision_arg(parser)
    parser.add_argument("--overwrite", action="store_true", help="redo outputs that a finished run already wrote")


def _add_sampler_arg(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--sampler", choices=DECODE_SAMPLERS, default=default,
                        help="ddim (official), dpmpp2m (deterministic, good at 10-25 steps) or prior (no diffusion: "
                             "the latent prior of codecs that have one, as the shipped default; several times "
                             "faster, and there closer to the input) (default: %(default)s)")


def _add_precision_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="fp32 (official numbers) or bf16 autocast: faster on AMX / AVX512-BF16 CPUs and GPUs "
                             "(default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semanticodec", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    encode = commands.add_parser("encode", help="audio files/folders -> token files")
    encode.add_argument("inputs", nargs="+", help="audio files or folders (searched recursively)")
    encode.add_argument("-o", "--output", required=True, help="output folder")
    encode.add_argument("--channel-policy", choices=["first", "mean"], default="first",
                        help="multi-channel input: keep channel 0 (official) or average (default: %(default)s)")
    encode.add_argument("--files-per-batch", type=int, default=8, help="files encoded together (default: %(default)s)")
    encode.add_argument("--overwrite", action="store_true", help="re-encode even if a valid output exists")
    _add_model_args(encode)
    _add_precision_arg(encode)

    info = commands.add_parser("info", help="print a token file's metadata")
    info.add_argument("files", nargs="+")

    decode = commands.add_parser("decode", help="token files -> wav files")
    decode.add_argument("inputs", nargs="+", help="token files or folders holding them")
    decode.add_argument("-o", "--output", required=True, help="output folder")
    _add_model_args(decode)
    _add_decode_args(decode)

    reconstruct = commands.add_parser("reconstruct", help="audio -> tokens -> audio (wav)")
    reconstruct.add_argument("inputs", nargs="+", help="audio files or folders (searched recursively)")
    reconstruct.add_argument("-o", "--output", required=True, help="output folder")
    reconstruct.add_argument("--channel-policy", choices=["first", "mean"], default="first")
    _add_model_args(reconstruct)
    _add_decode_args(reconstruct)

    add_eval_arguments(commands.add_parser("eval", help="reconstruct a manifest's clips and score them"))
    add_probe_arguments(commands.add_parser("probe", help="linear/MLP probes on pooled token embeddings"))
    add_generate_arguments(commands.add_parser("generate", help="caption or prompt clip -> generated wav + tokens"))
    for command in commands.choices.values():
        command.add_argument("--threads", type=int, default=None,
                             help="CPU threads for torch (default: the cores other processes do not keep busy, "
                                  "from the load average; on a busy machine fewer threads can be several times "
                                  "faster: benchmarks/threads.py)")
    return parser


def find_inputs(inputs: Iterable[str], suffix_ok) -> list[tuple[Path, Path]]:
    """(path, path relative to the output folder) for each file, folders searched recursively."""
    found = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            found += [(p, p.relative_to(path)) for p in sorted(path.rglob("*")) if p.is_file() and suffix_ok(p)]
        else:  # missing or odd files are reported when read
            found.append((path, Path(path.name)))
    return found


def _is_audio(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_SUFFIXES


def _is_tokens(path: Path) -> bool:
    return path.name.endswith(TOKEN_SUFFIX)


def _wav_name(relative: Path) -> Path:
    name = relative.name[: -len(TOKEN_SUFFIX)] if relative.name.endswith(TOKEN_SUFFIX) else relative.name
    base = Path(name)
    return relative.with_name((base.stem if base.suffix.lower() in AUDIO_SUFFIXES else name) + ".wav")


def drop_colliding(jobs: list[tuple[Path, Path]], failures: list[Path]) -> list[tuple[Path, Path]]:
    """(input, output) pairs whose output no other input also maps to; each colliding input is reported
    once (it would overwrite another's output, e.g. ``clip.wav`` and ``clip.flac``) and left out."""
    sources: dict[Path, list[Path]] = {}
    for path, target in jobs:
        sources.setdefault(target.resolve(), []).append(path)
    kept = []
    for path, target in jobs:
        others = [other for other in sources[target.resolve()] if other != path]
        if others:
            _fail(failures, path, ValueError(f"{path}: its output {target} would also be written for "
                                             f"{', '.join(map(str, others))}; give them separate output folders"))
        else:
            kept.append((path, target))
    return kept


def is_complete_wav(path: Path) -> bool:
    """An output wav that a finished run left (outputs are renamed into place only once complete)."""
    try:
        return path.is_file() and sf.info(str(path)).frames > 0
    except (RuntimeError, OSError):  # soundfile raises LibsndfileError (a RuntimeError) on a damaged file
        return False


def _load_codec(args):
    from codec.model import SemantiCodec

    return SemantiCodec.from_pretrained(args.model, checkpoint_path=args.checkpoint_path, device=args.device)


def _fail(failures: list, path: Path, error: Exception) -> None:
    failures.append(path)
    tqdm.write(f"error: {error}" if str(path) in str(error) else f"error: {path}: {error}", file=sys.stderr)


def run_encode(args) -> int:
    from codec.arguments import check_int
    from codec.audio import AudioError, load_audio
    from codec.tokenfile import TokenFileError, load_tokens, save_tokens

    check_int("files_per_batch", args.files_per_batch, 1)
    codec = _load_codec(args)
    tokens_digest = codec.tokens_digest()
    out_dir = Path(args.output)
    failures: list[Path] = []
    todo = []
    planned = [(path, out_dir / relative.with_name(relative.name + TOKEN_SUFFIX))
               for path, relative in find_inputs(args.inputs, _is_audio)]
    if not planned:
        raise ValueError(f"no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) in {', '.join(args.inputs)}")
    for path, target in drop_colliding(planned, failures):
        if target.exists() and not args.overwrite:
            try:
                load_tokens(target, expect=codec.config, tokens_digest=tokens_digest)
                continue
            except TokenFileError:
                pass  # stale or damaged output: encode again
        todo.append((path, target))
    with tqdm(total=len(todo), unit="file", desc="encode") as bar:
        for start in range(0, len(todo), args.files_per_batch):
            loaded = []
            for path, target in todo[start : start + args.files_per_batch]:
                try:
                    loaded.append((path, target, load_audio(path, channel_policy=args.channel_policy)))
                except AudioError as error:
                    _fail(failures, path, error)
                    bar.update(1)
            if not loaded:
                continue
            tokens, lengths = codec.encode_waveforms([wave for _, _, wave in loaded], precision=args.precision)
            for (path, target, wave), item, length in zip(loaded, tokens.cpu(), lengths.cpu()):
                extra = {"source": str(path), "source_seconds": wave.numel() / SAMPLE_RATE}
                try:
                    save_tokens(target, item[None, :length], length[None], codec.config, extra=extra,
                                tokens_digest=tokens_digest)
                except (OSError, RuntimeError) as error:  # a directory in the way, a read-only place, a full disk
                    _fail(failures, path, OSError(f"cannot write {target}: {error}"))
                bar.update(1)
    print(f"encoded {len(todo) - len(failures)} file(s), skipped {len(failures)} bad file(s) -> {out_dir}")
    return 1 if failures else 0


def run_info(args) -> int:
    from codec.tokenfile import TokenFileError, load_tokens

    status = 0
    for name in args.files:
        try:
            tokens = load_tokens(name)
        except TokenFileError as error:
            print(f"error: {error}", file=sys.stderr)
            status = 1
            continue
        rate = tokens.codec["token_rate"] / 2
        summary = {
            "file": name,
            "items": int(tokens.lengths.numel()),
            "frames": tokens.lengths.tolist(),
            "seconds": [round(int(n) / rate, 3) for n in tokens.lengths],
            "codec": tokens.codec,
            "extra": tokens.extra,
        }
        print(json.dumps(summary, indent=2))
    return status


class AtomicWavWriter:
    """Write a mono 16-kHz wav progressively (:func:`codec.files.atomic_path`): renamed into place by
    ``commit``, deleted by ``abort``."""

    def __init__(self, path: Path, sample_rate: int = SAMPLE_RATE) -> None:
        # A killed run (SIGKILL, power loss) cannot clean up: its partial file goes when the output is redone.
        for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp.wav"):
            stale.unlink(missing_ok=True)
        self._target = atomic_path(path, suffix=".tmp.wav")
        self.tmp = self._target.__enter__()
        self.file = sf.SoundFile(self.tmp, "w", samplerate=sample_rate, channels=1, subtype="PCM_16", format="WAV")

    def write(self, chunk: torch.Tensor) -> None:
        self.file.write(chunk.reshape(-1).clamp(-1, 1).numpy())

    def commit(self) -> None:
        self.file.close()
        self._target.__exit__(None, None, None)

    def abort(self) -> None:
        self.file.close()
        self._target.__exit__(RuntimeError, RuntimeError("aborted"), None)


def _decode_to_wavs(codec, tokens: torch.Tensor, lengths: torch.Tensor, targets: list[Path], args, bar) -> None:
    """Decode each item into its target wav, written progressively and renamed into place when complete."""
    for target in targets:
        if target.is_dir():
            raise IsADirectoryError(f"output {target} is an existing directory")
    writers: dict[int, AtomicWavWriter] = {}
    progress = {"done": 0}

    def advance(done: int, total: int) -> None:
        bar.update(done - progress["done"])  # the decoder reports windows done so far, per batch
        progress["done"] = done

    try:
        for item, chunk, last in codec.iter_decode(
            tokens, lengths, steps=args.steps, cfg_scale=args.cfg_scale, sampler=args.sampler, eta=args.eta,
            seed=args.seed, batch_size=args.batch_size, on_window=advance, precision=args.precision,
        ):
            if item not in writers:
                writers[item] = AtomicWavWriter(targets[item])
            writers[item].write(chunk)
            if last:
                writers.pop(item).commit()
    finally:
        for writer in writers.values():
            writer.abort()


def _count_windows(codec, lengths) -> int:
    from codec.windows import split_windows

    return sum(len(split_windows(int(n), codec.config.window_tokens)) for n in lengths)


def _plan_wav_outputs(args, accept, what: str):
    """What decode and reconstruct share before any work: the codec (settings checked), the output
    folder, the failure list, and (input, output wav) pairs that collide with no other."""
    codec = _load_codec(args)
    codec.check_decode_settings(args.steps, args.cfg_scale, args.sampler, args.eta, args.batch_size, args.precision)
    out_dir = Path(args.output)
    failures: list[Path] = []
    planned = [(path, out_dir / _wav_name(relative)) for path, relative in find_inputs(args.inputs, accept)]
    if not planned:
        raise ValueError(f"no {what} in {', '.join(args.inputs)}")
    return codec, out_dir, failures, drop_colliding(planned, failures)


def run_decode(args) -> int:
    from codec.tokenfile import TokenFileError, load_tokens

    codec, out_dir, failures, planned = _plan_wav_outputs(args, _is_tokens, f"token files (*{TOKEN_SUFFIX})")
    jobs, done = [], 0
    tokens_digest = codec.tokens_digest()
    for path, target in planned:
        try:
            token_file = load_tokens(path, expect=codec.config, tokens_digest=tokens_digest)
        except TokenFileError as error:
            _fail(failures, path, error)
            continue
        items = len(token_file.lengths)
        targets = [target] if items == 1 else [target.with_name(f"{target.stem}_{i}.wav") for i in range(items)]
        if not args.overwrite and all(is_complete_wav(t) for t in targets):
            done += 1  # finished by an earlier run: resume after it
            continue
        jobs.append((path, token_file, targets))
    total = sum(_count_windows(codec, token_file.lengths) for _, token_file, _ in jobs)
    written = 0
    with tqdm(total=total, unit="window", desc="decode") as bar:
        for path, token_file, targets in jobs:
            try:
                _decode_to_wavs(codec, token_file.tokens, token_file.lengths, targets, args, bar)
                written += 1
            except (OSError, RuntimeError) as error:  # a directory in the way, a read-only place, a full disk
                _fail(failures, path, OSError(f"cannot write {targets[0]}: {error}"))
    print(f"decoded {written} file(s), kept {done} finished earlier, skipped {len(failures)} bad file(s) -> {out_dir}")
    return 1 if failures else 0


def run_reconstruct(args) -> int:
    from codec.audio import AudioError, load_audio

    codec, out_dir, failures, jobs = _plan_wav_outputs(args, _is_audio, f"audio files ({', '.join(sorted(AUDIO_SUFFIXES))})")
    written = done = 0
    with tqdm(unit="window", desc="reconstruct") as bar:
        for path, target in jobs:
            if not args.overwrite and is_complete_wav(target):
                done += 1  # finished by an earlier run: resume after it
                continue
            try:
                wave = load_audio(path, channel_policy=args.channel_policy)
            except AudioError as error:
                _fail(failures, path, error)
                continue
            tokens, lengths = codec.encode_waveforms([wave], precision=args.precision)
            bar.total = (bar.total or 0) + _count_windows(codec, lengths)
            try:
                _decode_to_wavs(codec, tokens, lengths, [target], args, bar)
                written += 1
            except (OSError, RuntimeError) as error:  # a directory in the way, a read-only place, a full disk
                _fail(failures, path, OSError(f"cannot write {target}: {error}"))
    print(f"reconstructed {written} file(s), kept {done} finished earlier, skipped {len(failures)} bad file(s) "
          f"-> {out_dir}")
    return 1 if failures else 0


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``semanticodec eval`` options (:class:`codec.evaluate.EvalSettings`)."""
    from codec.evaluate import CORE_METRICS, METRICS

    parser.add_argument("--manifest", required=True, help="JSON Lines manifest (paths relative to its folder)")
    parser.add_argument("-o", "--output", required=True, help="output folder")
    parser.add_argument("--model", action="append", default=None,
                        help="[LABEL=]SOURCE, repeatable; SOURCE: shipped name, save_pretrained folder or "
                             "official-<rate>-<vocab>; {rate} expands over --token-rates (default: default)")
    parser.add_argument("--token-rates", default=None,
                        help="comma-separated token rates, e.g. 100,50,25: expands {rate} and filters models")
    parser.add_argument("--checkpoint-path", default=None,
                        help="folder laid out like the official hub repository (official models; may hold {rate})")
    parser.add_argument("--split", default="test", help="manifest split to evaluate, or 'all' (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N clips of the split")
    parser.add_argument("--metrics", default=",".join(METRICS),
                        help=f"comma-separated subset of {','.join(METRICS)} (default: all; "
                             f"{','.join(CORE_METRICS)} need no extra packages)")
    parser.add_argument("--spectrograms", type=int, default=3,
                        help="comparison images per model (default: %(default)s)")
    parser.add_argument("--save-audio", action="store_true", help="also write the reconstructions as wav files")
    parser.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=50, help="diffusion steps (default: %(default)s)")
    parser.add_argument("--cfg-scale", type=float, default=2.0, help="classifier-free guidance (default: %(default)s)")
    _add_sampler_arg(parser, "ddim")
    parser.add_argument("--eta", type=float, default=1.0, help="DDIM noise; 0 is deterministic (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the diffusion noise (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=4, help="decoder windows per batch (default: %(default)s)")


def eval_settings(args: argparse.Namespace):
    """The :class:`codec.evaluate.EvalSettings` of parsed ``semanticodec eval`` options."""
    from codec.evaluate import EvalSettings, parse_token_rates

    return EvalSettings(
        manifest=args.manifest, output=args.output, models=tuple(args.model or ["default"]),
        token_rates=tuple(parse_token_rates(args.token_rates)) if args.token_rates else None,
        checkpoint_path=args.checkpoint_path, split=args.split, limit=args.limit, metrics=_names(args.metrics),
        spectrograms=args.spectrograms, save_audio=args.save_audio, device=args.device, steps=args.steps,
        cfg_scale=args.cfg_scale, sampler=args.sampler, eta=args.eta, seed=args.seed, batch_size=args.batch_size)


def run_eval(args) -> int:
    from codec.evaluate import run_eval as evaluate

    return evaluate(eval_settings(args))


def add_probe_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``semanticodec probe`` options (:class:`semanticodec_lm.probe.ProbeSettings`)."""
    from semanticodec_lm.probe import TASKS

    clips = parser.add_mutually_exclusive_group(required=True)
    clips.add_argument("--manifest", help="JSON Lines manifest with split and label fields (clips are encoded)")
    clips.add_argument("--tokens", metavar="TOKEN_MANIFEST",
                       help="token manifest of recipes/tokenize (tokens read, not encoded; made by --model)")
    parser.add_argument("-o", "--output", required=True, help="output folder")
    parser.add_argument("--model", default="default",
                        help="shipped name, save_pretrained folder or official-<rate>-<vocab> (default: %(default)s)")
    parser.add_argument("--checkpoint-path", default=None, help="official checkpoint folder (official models only)")
    parser.add_argument("--semantic-codebook", default=None, metavar="KMEANS_RUN",
                        help="probe the semantic tokens of this k-means codebook (a recipes/codec/train_kmeans.py "
                             "run folder or weights file, any token rate) over the model's AudioMAE")
    parser.add_argument("--audiomae", default=None, metavar="AUDIOMAE_RUN",
                        help="with --semantic-codebook: use the AudioMAE of this recipes/codec/train_audiomae.py run "
                             "(folder or weights file) instead of the model's")
    parser.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated tasks (default: %(default)s)")
    parser.add_argument("--train-split", default="train", help="split the probes are fitted on (default: %(default)s)")
    parser.add_argument("--eval-splits", default="valid,test", help="splits scored (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N clips of each split")
    parser.add_argument("--kmeans-frames", type=int, default=100_000,
                        help="training mel frames sampled for the baseline k-means (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of k-means and probes (default: %(default)s)")


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def run_probe(args) -> int:
    from semanticodec_lm.probe import ProbeSettings, run_probe as probe

    return probe(ProbeSettings(
        output=args.output, manifest=args.manifest, tokens=args.tokens, model=args.model,
        checkpoint_path=args.checkpoint_path, semantic_codebook=args.semantic_codebook, audiomae=args.audiomae,
        device=args.device,
        tasks=_names(args.tasks), train_split=args.train_split, eval_splits=_names(args.eval_splits),
        limit=args.limit, kmeans_frames=args.kmeans_frames, seed=args.seed))


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``semanticodec generate`` options (:meth:`lm.api.AudioGenerator.generate`)."""
    from lm.api import DEFAULT_TEXT_CFG_SCALE, folder_max_seconds

    parser.add_argument("--text", default=None, help="caption to generate from")
    parser.add_argument("--prompt", default=None, help="audio file to continue (its reconstruction comes first)")
    shipped = folder_max_seconds("default")
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="seconds of new audio; prompt + new audio must fit the LM"
                             + (f" (the shipped LM holds {shipped:.1f} s)" if shipped else "") + " (default: %(default)s)")
    parser.add_argument("-o", "--output", required=True,
                        help="output .wav; the tokens go next to it as <name>.tokens.safetensors")
    parser.add_argument("--model", default="default",
                        help="LM folder or shipped LM name (default: %(default)s)")
    parser.add_argument("--codec", default=None,
                        help="codec name or folder (default: the codec the LM was trained with)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the LM sampling and the decoder noise (default: random)")
    parser.add_argument("--temperature", type=float, default=1.0, help="(default: %(default)s)")
    parser.add_argument("--top-k", type=int, default=None, help="keep the k most likely tokens (default: all)")
    parser.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass (default: off)")
    parser.add_argument("--cfg-scale", type=float, default=None,
                        help=f"classifier-free guidance on the text "
                             f"(default: {DEFAULT_TEXT_CFG_SCALE:g} with --text, 1 without)")
    parser.add_argument("--decode-steps", type=int, default=25, help="diffusion decoder steps (default: %(default)s)")
    _add_sampler_arg(parser, "dpmpp2m")
    parser.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="fp32, or bf16 autocast: faster on AMX / AVX512-BF16 CPUs and GPUs (default: %(default)s)")


def _progress(bar: tqdm, done: int, total: int) -> None:
    """Move a progress bar to ``done`` of ``total`` (callbacks report totals so far, not increments)."""
    bar.total = total
    bar.update(done - bar.n)


def run_generate(args: argparse.Namespace) -> int:
    """Run ``semanticodec generate`` (options from :func:`add_generate_arguments`): the wav and its tokens
    beside it; returns 0. Raises ValueError (or a subclass) with a one-line message for bad options or inputs.
    """
    from codec.audio import AudioError, write_audio
    from codec.tokenfile import save_tokens
    from lm.api import AudioGenerator, tokens_path_for

    output = Path(args.output)
    if output.suffix.lower() != ".wav":
        raise ValueError(f"-o {output}: the output must be a .wav file")
    if args.prompt is not None and not Path(args.prompt).is_file():
        raise AudioError(args.prompt, "a folder, not an audio file" if Path(args.prompt).is_dir() else "no such prompt file")
    output.parent.mkdir(parents=True, exist_ok=True)
    generator = AudioGenerator.from_pretrained(args.model, codec=args.codec, device=args.device)
    seed = args.seed if args.seed is not None else int(torch.randint(0, 2**31 - 1, ()).item())
    with tqdm(desc="LM", unit="id") as lm_bar, tqdm(desc="decode", unit="window") as decode_bar:
        audio, tokens = generator.generate(
            text=args.text, prompt=args.prompt, seconds=args.seconds, seed=seed, temperature=args.temperature,
            top_k=args.top_k, top_p=args.top_p, cfg_scale=args.cfg_scale, decode_steps=args.decode_steps,
            sampler=args.sampler, precision=args.precision,
            on_step=lambda done, total: _progress(lm_bar, done, total),
            on_window=lambda done, total: _progress(decode_bar, done, total),
        )
    write_audio(output, audio[0, 0])
    extra = {"text": args.text, "prompt": args.prompt, "seconds": args.seconds, "seed": seed, "model": str(args.model),
             "temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p, "cfg_scale": args.cfg_scale}
    token_file = tokens_path_for(output)
    save_tokens(token_file, tokens.tokens, tokens.lengths, generator.codec.config, extra=extra,
                tokens_digest=generator.tokens_digest)
    print(f"wrote {output} ({audio.shape[-1] / SAMPLE_RATE:.2f} s) and {token_file} (seed {seed})")
    return 0


COMMANDS = {
    "encode": run_encode,
    "info": run_info,
    "decode": run_decode,
    "reconstruct": run_reconstruct,
    "eval": run_eval,
    "probe": run_probe,
    "generate": run_generate,
}


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that the same clean-up as Ctrl-C runs."""


def _raise_terminated(signum: int, frame) -> None:
    raise Terminated


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While the block runs (in the main thread), SIGTERM raises :class:`Terminated`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``semanticodec`` console script; returns the exit status (130 after Ctrl-C,
    143 after SIGTERM: outputs are written atomically, so nothing half-written stays behind)."""
    args = build_parser().parse_args(argv)
    previous_threads = torch.get_num_threads()  # restored at the end: in-process callers keep theirs
    try:
        with terminate_as_interrupt():
            if args.threads is not None:
                from codec.arguments import check_int

                torch.set_num_threads(check_int("threads", args.threads, 1))
            else:
                from semanticodec_lm.hardware import usable_cores

                torch.set_num_threads(usable_cores())
            return COMMANDS[args.command](args)
    except (ValueError, OSError, KeyError, ImportError) as error:  # configuration problems: one line
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Terminated:
        print("terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        torch.set_num_threads(previous_threads)


if __name__ == "__main__":
    sys.exit(main())
