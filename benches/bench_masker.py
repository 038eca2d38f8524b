"""Masker throughput and detection quality, side by side with Microsoft Presidio.

Run (release build of the extension first):
    maturin develop --release        # or: pip install -e '.[bench]'
    python benches/bench_masker.py [--quick]

Measures, on one core, in the same run (CPU time of the calling thread, so other load on a
shared machine does not count):
  (a) MB/s on LLM-style prose with no PII, (b) MB/s on prose dense with PII,
  (c) a 200-token SSE stream: microseconds added per event,
  (d) adversarial inputs (dense PEM blocks, PEM heads, JWTs, digit runs, address-like chains,
      1 MB without a newline) at 64 KB and at 1 MB: linear time means equal MB/s at both;
and precision/recall per entity on a Faker-generated labeled corpus, for `gateway._masker`
and for Presidio's pattern recognizers (presidio-analyzer with NoOpNlpEngine, so no spaCy
model, plus presidio-anonymizer). Presidio runs on a smaller slice of the same text (it is
much slower); throughput is normalised per MB.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Callable

from faker import Faker

from gateway import _masker

SEED = 7
# Presidio entity -> masker entity (shared types only).
PRESIDIO_MAP = {
    "EMAIL_ADDRESS": "email",
    "PHONE_NUMBER": "phone",
    "US_SSN": "us_ssn",
    "CREDIT_CARD": "credit_card",
    "IBAN_CODE": "iban",
    "IP_ADDRESS": "ip",
}
SHARED = ["email", "phone", "us_ssn", "credit_card", "iban", "ip"]

PROSE = [
    "Sure! Here is a concise overview of the approach you asked about.",
    "First, the model tokenizes the input and maps each token to an embedding vector.",
    "The attention layers then mix information across positions, weighting relevant context.",
    "In practice you would tune the learning rate, batch size and warmup schedule together.",
    "Let me know if you would like a worked example or a deeper dive into any step.",
    "Overall, the trade-off is between latency, memory footprint and answer quality.",
    "This pattern keeps the service stateless, which makes horizontal scaling straightforward.",
]


def fake_values(fake: Faker) -> dict[str, Callable[[], str]]:
    return {
        "email": fake.email,
        "phone": fake.phone_number,
        "us_ssn": fake.ssn,
        "credit_card": lambda: fake.credit_card_number(),
        "iban": fake.iban,
        "ip": lambda: fake.ipv4() if random.random() < 0.6 else fake.ipv6(),
    }


TEMPLATES = [
    "Please contact {} about the renewal.",
    "The value on file is {} according to the form.",
    "Customer record: {}.",
    "I found {} in the log, is that expected?",
    "Send it to {} before Friday.",
]


def labeled_corpus(n: int) -> list[tuple[str, list[tuple[str, int, int]]]]:
    fake = Faker("en_US")
    Faker.seed(SEED)
    random.seed(SEED)
    gens = fake_values(fake)
    out = []
    for i in range(n):
        ent = SHARED[i % len(SHARED)]
        value = gens[ent]()
        tpl = random.choice(TEMPLATES)
        pre, post = tpl.split("{}")
        text = pre + value + post
        s = len(pre.encode())
        out.append((text, [(ent, s, s + len(value.encode()))]))
    return out


def prose(nbytes: int) -> str:
    random.seed(SEED)
    parts, size = [], 0
    while size < nbytes:
        p = random.choice(PROSE)
        parts.append(p)
        size += len(p) + 1
    return " ".join(parts)


def dense(nbytes: int) -> str:
    fake = Faker("en_US")
    Faker.seed(SEED)
    random.seed(SEED)
    gens = fake_values(fake)
    parts, size = [], 0
    while size < nbytes:
        ent = random.choice(SHARED)
        p = random.choice(TEMPLATES).format(gens[ent]())
        parts.append(p)
        size += len(p) + 1
    return " ".join(parts)


class Presidio:
    def __init__(self) -> None:
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
        from presidio_analyzer.nlp_engine import NoOpNlpEngine
        from presidio_anonymizer import AnonymizerEngine

        logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
        engine = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
        registry = RecognizerRegistry()
        registry.load_predefined_recognizers(nlp_engine=engine)
        self.analyzer = AnalyzerEngine(registry=registry, nlp_engine=engine)
        self.anonymizer = AnonymizerEngine()
        self.entities = list(PRESIDIO_MAP)

    def analyze(self, text: str):
        return self.analyzer.analyze(text=text, language="en", entities=self.entities)

    def mask(self, text: str) -> str:
        return self.anonymizer.anonymize(text=text, analyzer_results=self.analyze(text)).text


def best_of(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.thread_time()
        fn()
        times.append(time.thread_time() - t)
    return min(times)


def _pem(rng: random.Random) -> str:
    body = base64.b64encode(rng.randbytes(1200)).decode()
    lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN PRIVATE KEY-----\n{lines}\n-----END PRIVATE KEY-----\n"


def _jwt(rng: random.Random) -> str:
    def b64(n: int) -> str:
        return base64.urlsafe_b64encode(rng.randbytes(n)).decode().rstrip("=")

    return f"eyJhbGciOiJIUzI1NiJ9.eyJ{b64(90)}.{b64(32)} "


# Inputs built to find superlinear paths: each is one piece repeated with no newline.
ADVERSARIAL: dict[str, Callable[[random.Random], str]] = {
    "pem_blocks": _pem,
    "pem_heads_only": lambda rng: "-----BEGIN PRIVATE KEY-----AAAA!",
    "jwts": _jwt,
    "digit_run": lambda rng: "1234567890",
    "digit_groups": lambda rng: "1234 ",
    "dotted_digits": lambda rng: "1.2.",
    "hex_colons": lambda rng: "1a:",
    "at_chain": lambda rng: "a@b.",
    "letters_no_space": lambda rng: "abcdefghij",
}


def adversarial(repeat: int) -> dict:
    m = _masker.Masker(["all"])
    res = {}
    for name, piece in ADVERSARIAL.items():
        rng = random.Random(SEED)
        parts, size = [], 0
        while size < 1_000_000:
            p = piece(rng)
            parts.append(p)
            size += len(p)
        big = "".join(parts)[:1_000_000]
        row = {}
        for label, n in (("64KB", 64_000), ("1MB", 1_000_000)):
            text = big[:n]
            row[f"MBps_{label}"] = n / best_of(lambda text=text: m.mask_text(text), repeat) / 1e6
        row["ratio_64KB_over_1MB"] = row["MBps_64KB"] / row["MBps_1MB"]
        res[name] = row
    return res


def throughput(args: argparse.Namespace, presidio: Presidio) -> dict:
    m = _masker.Masker(["all"])
    res = {}
    for name, make in (("prose_no_pii", prose), ("prose_dense_pii", dense)):
        big = make(args.mb * 1_000_000)
        small = big[: args.presidio_kb * 1000]
        t_m = best_of(lambda big=big: m.mask_text(big), args.repeat)
        t_p = best_of(lambda small=small: presidio.mask(small), 1)
        mbps_m = len(big.encode()) / t_m / 1e6
        mbps_p = len(small.encode()) / t_p / 1e6
        res[name] = {"masker_MBps": mbps_m, "presidio_MBps": mbps_p, "ratio": mbps_m / mbps_p}
    return res


def sse_stream(presidio: Presidio) -> dict:
    m = _masker.Masker(["all"], paths=_masker.DEFAULT_RESPONSE_PATHS)
    text = dense(1200)
    toks = [text[i : i + 4] for i in range(0, 800, 4)][:200]
    events = []
    for t in toks:
        ev = {
            "id": "c",
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": None}],
        }
        events.append(f"data: {json.dumps(ev)}\n\n".encode())
    events.append(b"data: [DONE]\n\n")

    def run_masker() -> None:
        s = m.sse_stream()
        for e in events:
            s.push(e)
        s.finish()

    def run_passthrough() -> None:  # what the proxy does anyway: parse each event's JSON
        for e in events[:-1]:
            json.loads(e[6:])

    t_m = statistics.median(best_of(run_masker, 5) for _ in range(3))
    t_0 = best_of(run_passthrough, 5)
    t_p = best_of(lambda: [presidio.mask(t) for t in toks], 1)
    n = len(events)
    return {
        "events": n,
        "masker_us_per_event": t_m / n * 1e6,
        "json_parse_only_us_per_event": t_0 / n * 1e6,
        "presidio_us_per_event_chunkwise": t_p / len(toks) * 1e6,
    }


def quality(args: argparse.Namespace, presidio: Presidio) -> dict:
    corpus = labeled_corpus(args.labeled)
    m = _masker.Masker(["all"])
    to_shared = {"ipv4": "ip", "ipv6": "ip"}
    counts = {s: defaultdict(lambda: [0, 0, 0]) for s in ("masker", "presidio")}  # tp fp fn

    def score(system: str, gold: list, pred: list) -> None:
        c = counts[system]
        for ent in SHARED:
            g = [x for x in gold if x[0] == ent]
            p = [x for x in pred if x[0] == ent]
            hit = [any(ps < ge and gs < pe for _, ps, pe in p) for _, gs, ge in g]
            c[ent][0] += sum(hit)
            c[ent][2] += len(hit) - sum(hit)
            c[ent][1] += sum(
                1 for _, ps, pe in p if not any(ps < ge and gs < pe for _, gs, ge in g)
            )

    for text, gold in corpus:
        pred = [(to_shared.get(e, e), s, t) for e, s, t in m.mask_text(text)[1]]
        score("masker", gold, pred)
        pres = []
        for r in presidio.analyze(text):
            s = len(text[: r.start].encode())
            pres.append((PRESIDIO_MAP[r.entity_type], s, s + len(text[r.start : r.end].encode())))
        score("presidio", gold, pres)
    out = {}
    for system, c in counts.items():
        out[system] = {}
        for ent in SHARED:
            tp, fp, fn = c[ent]
            out[system][ent] = {
                "precision": tp / (tp + fp) if tp + fp else 0.0,
                "recall": tp / (tp + fn) if tp + fn else 0.0,
            }
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller inputs (CI smoke run)")
    ap.add_argument("--mb", type=int, default=8)
    ap.add_argument("--presidio-kb", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--labeled", type=int, default=1200)
    ap.add_argument("--adversarial", action="store_true", help="only (d): linear-time check")
    args = ap.parse_args()
    if args.quick:
        args.mb, args.presidio_kb, args.repeat, args.labeled = 1, 20, 2, 300
    if args.adversarial:
        print(json.dumps(adversarial(args.repeat), indent=2))
        return
    presidio = Presidio()
    result = {
        "throughput": throughput(args, presidio),
        "sse_200_tokens": sse_stream(presidio),
        "quality": quality(args, presidio),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
