"""Tokens/s of SODA's fast tokenize path vs the HF tokenizer's batch encode.

Both encode the same synthetic interleaved documents (30-second utterances: 3,000 audio
characters plus a sentence of text, many per document, both formats) with the same extended
tokenizer, each in its own fresh process, one after the other. The ids are checked identical
(SHA-256 over all ids). A numpy lower bound for the audio part (the arithmetic character -> id
mapping alone, on the audio strings) shows how close the fast path gets.

    python benchmarks/tokenize_bench.py [--tokenizer DIR] [--docs 40] [--utterances 20] [--repeats 3]

Without --tokenizer the Llama 3 based SODA tokenizer is built into a temporary directory.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing as mp
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_WORDS = (
    "so the thing is we went down to the river and it was cold but honestly the view made "
    "up for it and everyone agreed we should come back in the spring café naïve 2024 🎉"
).split()


def make_documents(num_docs: int, utterances: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """(documents, every audio string inside them, in order) - deterministic."""
    import numpy as np

    from tokenizer.audio import codes_to_chars
    from tokenizer.documents import AUDIO_FIRST, TEXT_FIRST, Utterance, render

    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    docs, audios = [], []
    for d in range(num_docs):
        utts = []
        for i in range(utterances):
            text = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(8, 20))).capitalize() + "."
            audio = codes_to_chars(nrng.integers(0, 2048, size=(8, 375)))  # 30 s at 12.5 Hz
            utts.append(Utterance(f"u{i}", f"r{d}", i, text, 30.0, audio))
        for fmt in (TEXT_FIRST, AUDIO_FIRST):
            docs.append(render(utts, fmt))
            audios.extend(u.audio for u in utts)
    return docs, audios


def _digest(id_arrays) -> str:
    import numpy as np

    h = hashlib.sha256()
    for ids in id_arrays:
        arr = np.asarray(ids, dtype=np.int32)
        h.update(len(arr).to_bytes(8, "little"))
        h.update(arr.tobytes())
    return h.hexdigest()


def _worker(method: str, tokenizer_dir: str, num_docs: int, utterances: int, repeats: int, queue) -> None:
    import numpy as np

    docs, audios = make_documents(num_docs, utterances)
    if method == "hf":
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tokenizer_dir)

        def run():
            return tok(docs, add_special_tokens=False)["input_ids"]

    elif method == "fast":
        from tokenizer.fast_tokenize import FastTokenizer

        tok = FastTokenizer(tokenizer_dir)

        def run():
            return tok.encode_batch(docs)

    elif method == "numpy_audio":
        from tokenizer.audio import UNICODE_OFFSET

        base = 128260

        def run():
            return [
                (np.frombuffer(a.encode("utf-32-le"), dtype="<u4") - np.uint32(UNICODE_OFFSET)).view(np.int32)
                + np.int32(base)
                for a in audios
            ]

    else:
        raise ValueError(method)
    best, ids = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        ids = run()
        best = min(best, time.perf_counter() - t0)
    tokens = sum(len(x) for x in ids)
    queue.put({"method": method, "seconds": best, "tokens": tokens, "digest": _digest(ids)})


def measure(method: str, tokenizer_dir: str, num_docs: int, utterances: int, repeats: int) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_worker, args=(method, tokenizer_dir, num_docs, utterances, repeats, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", help="extended tokenizer dir (default: build the Llama 3 one)")
    parser.add_argument("--docs", type=int, default=20, help="recordings (2 documents each)")
    parser.add_argument("--utterances", type=int, default=20, help="30-second utterances per recording")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per method (best kept)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer_dir = args.tokenizer
        if tokenizer_dir is None:
            from tokenizer.build import build_extended_tokenizer, save_extended_tokenizer

            tok, layout = build_extended_tokenizer("llama3")
            tokenizer_dir = os.path.join(tmp, "tokenizer")
            save_extended_tokenizer(tok, layout, tokenizer_dir, "llama3")
        rows = [measure(m, tokenizer_dir, args.docs, args.utterances, args.repeats) for m in ("hf", "fast", "numpy_audio")]

    hf, fast, lb = rows
    if hf["digest"] != fast["digest"] or hf["tokens"] != fast["tokens"]:
        print("ERROR: fast tokenize ids differ from the HF tokenizer's", file=sys.stderr)
        return 1
    rate = {r["method"]: r["tokens"] / r["seconds"] for r in rows}
    audio_share = lb["tokens"] / fast["tokens"]
    print(
        f"{args.docs * 2} documents, {fast['tokens']:,} tokens ({audio_share:.1%} audio), "
        f"best of {args.repeats}; ids identical (sha256 {fast['digest'][:12]})\n"
    )
    print("| method | tokens | seconds | tokens/s | vs HF |")
    print("|---|---:|---:|---:|---:|")
    names = {
        "hf": "HF `tokenizer(docs)` (fast, batched)",
        "fast": "SODA `FastTokenizer.encode_batch`",
        "numpy_audio": "numpy lower bound, audio chars only",
    }
    for r in rows:
        print(
            f"| {names[r['method']]} | {r['tokens']:,} | {r['seconds']:.3f} | "
            f"{rate[r['method']] / 1e6:.1f}M | {rate[r['method']] / rate['hf']:.1f}x |"
        )
    print(
        f"\nfast path: {rate['fast'] / rate['hf']:.1f}x HF; "
        f"{rate['fast'] / rate['numpy_audio']:.0%} of the numpy audio lower bound's tokens/s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
